"""What a member-claimer (anyone who sends with a member's id: the peer
port has no authentication without peer TLS) can make the core assert on
is checked before stepping, or dropped and logged at ERROR: never fatal."""
from __future__ import annotations

import logging

from engine.proto import raft_pb2 as pb
from tests.server.inproc import InProcCluster, eventually, get, put, run


def test_forged_ack_past_the_leaders_log_is_dropped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="engine.server")

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            f = next(n for n in c.nodes.values() if n is not lead)
            await put(lead, b"k", b"1")
            last = lead.rn.raft.log.last_index()
            before = lead.dropped_peer_messages
            lead._on_messages([pb.Message(type=pb.MsgAppResp, to=lead.member_id, from_=f.member_id,
                                          term=lead.term, index=last + 1000)])
            await eventually(lambda: lead.dropped_peer_messages > before, 5, "the forged ack to be dropped")
            assert lead.rn.raft.log.committed <= lead.rn.raft.log.last_index()
            assert lead._fatal is None and lead.is_leader
            await put(lead, b"k", b"2")
            assert await get(f, b"k") == b"2"
            assert any("past our last index" in r.getMessage() for r in caplog.records)
        finally:
            await c.stop_all()
    run(main())


def test_a_core_assertion_on_a_peer_message_is_dropped_at_error(tmp_path, caplog):
    """An invariant the core asserts on a peer's message cannot be told from
    a forged message by the message alone: dropped, logged at ERROR (with
    the traceback), counted, never fatal."""
    caplog.set_level(logging.WARNING, logger="engine.server")

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            f = next(n for n in c.nodes.values() if n is not lead)
            orig, calls = f.rn.step, []

            def step(m):
                if m.type == pb.MsgHeartbeat and not calls:
                    calls.append(m)
                    raise AssertionError("entry 7 conflicts with committed entry")
                return orig(m)
            f.rn.step = step
            await eventually(lambda: f.peer_invariant_failures >= 1, 5, "the heartbeat to be dropped")
            assert f._fatal is None and not f.failed.is_set()
            recs = [r for r in caplog.records if "core invariant failed" in r.getMessage()]
            assert recs and recs[0].levelno == logging.ERROR and recs[0].exc_info
            await put(lead, b"after", b"ok")
            assert await get(f, b"after") == b"ok"
        finally:
            await c.stop_all()
    run(main())
