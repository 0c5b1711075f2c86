"""A removed member stops itself, as etcd's does, and only on a trustworthy
signal (issue 8 follow-up; see test_crash_removed_member for the scenario).

- a peer that applied a member's removal refuses its streams with a status
  of their own (FAILED_PRECONDITION, details "removed member: ..."), and the
  refused member's transport reports it (on_removed);
- a peer that merely does not know the member (it has not applied the ADD
  yet, a stale peer) refuses it as "not a member": no report, no exit;
- the process exits with status 0 and etcd's line "the member has been
  permanently removed from the cluster".
"""
from __future__ import annotations


from engine.proto import raft_pb2 as raftpb
from tests.transport.helpers import HOST, Member, close_all, run, wait_until

from .conftest import restart_member, wait_for
from .test_crash_removed_member import EXIT_WITHIN, _add_voter, _remove


def test_only_a_peer_that_applied_the_removal_reports_it():
    async def main():
        a, b = await Member(1).start(), await Member(2).start()
        removed: list[int] = []
        b.transport.on_removed = removed.append
        try:
            # a does not know b (stale: has not applied b's ADD): refused, no report.
            b.transport.add_peer(1, [a.url])
            for i in range(1, 4):
                b.transport.send([raftpb.Message(type=raftpb.MsgHeartbeatResp, to=1, from_=2, term=1)])
                await wait_until(lambda: a.transport.refused_streams >= 1, 5, "a to refuse b's stream")
            await wait_until(lambda: len(b.unreachable) >= 1, 5, "b to see a refusing")
            assert removed == []
            # a applied b's removal: refused as removed, reported once per refusal.
            a.transport.add_peer(2, [f"http://{HOST}:1"])
            a.transport.remove_peer(2)

            def poke():
                b.transport.send([raftpb.Message(type=raftpb.MsgHeartbeatResp, to=1, from_=2, term=1)])
            await wait_until(lambda: bool(removed), 10, "b to learn it was removed", poll=poke)
            assert set(removed) == {1}
        finally:
            await close_all([a, b])
    run(main())


def test_a_removed_member_with_nothing_to_send_learns_it_from_a_probe():
    """A member with nothing to send (a learner removed while down, which no
    leader writes to) heard of its removal only when it sent something, so
    it could stay up for good: the prober asks every peer, and the refusal
    of a peer that applied the removal is reported, with no stream opened."""
    async def main():
        a, b = await Member(1).start(), await Member(2).start()
        removed: list[int] = []
        b.transport.on_removed = removed.append
        # Streams on gRPC, which opens nothing before there is a message
        # (the plain-TCP stream's greeting would be refused first and tell b
        # at once: tests/transport/test_peerwire.py): only the probe can tell.
        b.transport.raw_streams = False
        try:
            a.transport.add_peer(2, [f"http://{HOST}:1"])
            a.transport.remove_peer(2)           # a applied b's removal
            b.transport.add_peer(1, [a.url])     # b sends nothing
            await wait_until(lambda: bool(removed), 10, "b to learn it was removed without sending")
            assert removed == [1]
            assert a.transport.refused_streams == 0  # no stream was opened and refused
        finally:
            await close_all([a, b])
    run(main())


def test_a_probe_measures_the_round_trip_and_a_stranger_proves_nothing():
    """Probes between members report their round trip (the metric
    etcd_network_peer_round_trip_time_seconds); a peer that does not know
    the prober (it has not applied its ADD) refuses the probe, which is no
    evidence of removal, and a cut link leaves it unanswered."""
    async def main():
        a, b, c = await Member(1).start(), await Member(2).start(), await Member(3).start()
        rtts: list[tuple[int, float]] = []
        removed: list[int] = []
        a.transport.on_peer_rtt = lambda peer, s: rtts.append((peer, s))
        a.transport.on_removed = removed.append
        try:
            b.transport.add_peer(1, [a.url])
            a.transport.add_peer(2, [b.url])
            a.transport.add_peer(3, [c.url])     # c does not know a
            await wait_until(lambda: any(p == 2 for p, _ in rtts), 10, "a probe of b to be answered")
            peer, seconds = next(x for x in rtts if x[0] == 2)
            assert 0 < seconds < 2
            assert a.transport.peers()[2].rtt is not None
            assert all(p != 3 for p, _ in rtts) and removed == []
            assert a.transport.peers()[3].rtt is None
        finally:
            await close_all([a, b, c])
    run(main())


def _exit_code(m) -> int | None:
    return m.proc.poll() if m.proc is not None else None


def test_a_removed_member_exits_0_with_etcds_message(hard_cluster_factory):
    c = hard_cluster_factory(3)
    idx, mid = _add_voter(c)
    _remove(c, 0, mid)
    m = c.members[idx]
    wait_for(lambda: not m.running(), EXIT_WITHIN, f"the removed member {m.name} to exit")
    assert _exit_code(m) == 0, m.log_tail()
    log = m.log_tail(100000)
    # Applied its own removal, or (the leader stops sending to it once it
    # applied the removal) learnt it from a peer refusing its stream.
    assert ("the member has been permanently removed from the cluster (applied its removal" in log
            or "refused our stream as from a removed member" in log), log[-3000:]
    # Restarted on the same data dir: it stops again (its store says so, or its peers).
    restart_member_expecting_exit(c, idx)
    assert m.log_tail(100000).count("the member has been permanently removed from the cluster (") == 2


def restart_member_expecting_exit(c, idx: int) -> None:
    m = c.members[idx]
    try:
        restart_member(c, idx, timeout=EXIT_WITHIN)
    except Exception:
        pass  # it may exit before it listens
    wait_for(lambda: not m.running(), EXIT_WITHIN, f"the removed member {m.name} to exit again")
    assert _exit_code(m) == 0, m.log_tail()


def test_a_member_removed_while_down_learns_it_from_a_peer(hard_cluster_factory):
    c = hard_cluster_factory(3)
    idx, mid = _add_voter(c)
    c.kill(idx)
    _remove(c, 0, mid)
    m = c.members[idx]
    restart_member_expecting_exit(c, idx)
    log = m.log_tail(100000)
    assert "refused our stream as from a removed member" in log, log[-3000:]
    # The others are unharmed.
    for i in range(3):
        assert c.members[i].running()
