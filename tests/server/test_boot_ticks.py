"""etcd's --initial-election-tick-advance (server.go adjustTicks): at start a
member fast-forwards its election clock, so a fresh cluster elects in about
a heartbeat or two instead of a whole randomized election timeout (1-2 s at
the defaults: most of the time every cluster start in the test suite spent
waiting). In-process members with real peer ports on 127.0.0.1."""
from __future__ import annotations

from tests.server.inproc import InProcCluster, run

ET = 10   # InProcCluster: --heartbeat-interval 50 --election-timeout 500


def test_a_lone_member_advances_all_but_one_tick(tmp_path) -> None:
    async def main():
        c = InProcCluster(str(tmp_path), 1)
        try:
            await c.start_all()
            leader = await c.leader()
            assert leader.boot_ticks_advanced == ET - 1
        finally:
            await c.stop_all()
    run(main())


def test_a_member_with_its_peers_up_advances_all_but_two(tmp_path) -> None:
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        try:
            await c.start_all()
            await c.leader()
            nodes = list(c.nodes.values())
            # Each advanced once it saw both peer streams up (by the election at the latest).
            assert all(n.boot_ticks_advanced in (0, ET - 2) for n in nodes)
            assert any(n.boot_ticks_advanced == ET - 2 for n in nodes)
        finally:
            await c.stop_all()
    run(main())


def test_the_flag_turns_it_off_for_a_cluster_but_not_for_a_lone_member(tmp_path) -> None:
    async def main():
        c = InProcCluster(str(tmp_path / "three"), 3, extra=("--initial-election-tick-advance=false",))
        try:
            await c.start_all()
            await c.leader()
            assert [n.boot_ticks_advanced for n in c.nodes.values()] == [0, 0, 0]
        finally:
            await c.stop_all()
        # As etcd: a single-member cluster advances whatever the flag says.
        one = InProcCluster(str(tmp_path / "one"), 1, extra=("--initial-election-tick-advance=false",))
        try:
            await one.start_all()
            assert (await one.leader()).boot_ticks_advanced == ET - 1
        finally:
            await one.stop_all()
    run(main())
