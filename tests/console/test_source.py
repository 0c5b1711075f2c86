"""ClusterSource against a real 3-member etcd: the model and the actions."""
from __future__ import annotations

import asyncio

import hashlib
import uuid

import pytest

from raftui.source import ClusterSource
from tests.support.etcd import etcdctl

from .conftest import run

pytestmark = pytest.mark.usefixtures("etcd_binaries")


@pytest.fixture
def prefix() -> str:
    return f"src-{uuid.uuid4().hex[:6]}-"


async def _ready(source: ClusterSource, rounds: int = 100):
    for _ in range(rounds):
        state = await source.poll()
        if state.leader_id and len(state.members) == 3 and all(m.health == "up" for m in state.members):
            return state
        await asyncio.sleep(0.1)  # poll interval, as the console's own timer
    raise AssertionError(f"cluster not seen healthy: {source.state}")


def test_model_from_one_endpoint_discovers_every_member(real_etcd3):
    async def body():
        source = ClusterSource(real_etcd3.endpoints[:1])
        try:
            state = await _ready(source)
        finally:
            await source.close()
        names = [m.name for m in state.members]
        assert names == sorted(m.name for m in real_etcd3.members)
        assert sum(m.role == "leader" for m in state.members) == 1
        assert state.term >= 2 and state.revision >= 1 and state.cluster_id
        assert state.inspect is False          # etcd has no Inspect service
        assert all(m.db_size > 0 for m in state.members)
        assert state.timeline and state.timeline[-1].kind == "attach"
    run(body())


def test_write_history_read_at_revision_and_compact_errors(real_etcd3, prefix):
    async def body():
        source = ClusterSource(real_etcd3.endpoints)
        key = prefix + "k"
        try:
            await _ready(source)
            r1 = await source.put(key, "one")
            r2 = await source.put(key, "two", lease_ttl=60)
            assert r1.ok and r2.ok and r2.data == r1.data + 1
            old = await source.get(key, revision=r1.data)
            assert [kv.value for kv in old.data] == ["one"]
            hist = await source.history(key)
            assert [(kv.value, kv.mod_revision) for kv in hist.data] == [("two", r2.data), ("one", r1.data)]
            page = await source.list_keys(prefix)
            assert [kv.key for kv in page.data.keys] == [key] and page.data.count == 1
            bad = await source.put("", "x")
            assert not bad.ok and bad.text.endswith("etcdserver: key is not provided")
            future = await source.get(key, revision=r2.data + 1000)
            assert future.text.endswith("etcdserver: mvcc: required revision is a future revision")
        finally:
            await source.close()
    run(body())


def test_snapshot_save_verifies_sha256_and_etcdctl_accepts_it(real_etcd3, tmp_path):
    async def body():
        source = ClusterSource(real_etcd3.endpoints)
        try:
            await _ready(source)
            return await source.snapshot_save(str(tmp_path / "snap.db"))
        finally:
            await source.close()
    result = run(body())
    assert result.ok, result.text
    data = (tmp_path / "snap.db").read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    status = etcdctl(real_etcd3.endpoints, "snapshot", "status", str(tmp_path / "snap.db"))
    assert status.returncode == 0, status.stderr


def test_compact_revision_is_probed(etcd_cluster_factory):
    cluster = etcd_cluster_factory(1)

    async def body():
        source = ClusterSource(cluster.endpoints)
        try:
            await source.poll()
            for i in range(4):
                last = await source.put("c", str(i))
            await source.compact(last.data - 1)
            fresh = ClusterSource(cluster.endpoints)   # learns it by probing, not from our action
            try:
                state = await fresh.poll()
            finally:
                await fresh.close()
            return last.data - 1, state.compact_revision
        finally:
            await source.close()
    wanted, seen = run(body())
    assert seen == wanted


def test_faults_and_moves_report_etcd_answers(real_etcd3):
    async def body():
        source = ClusterSource(real_etcd3.endpoints)
        try:
            state = await _ready(source)
            follower = next(m for m in state.members if m.role == "follower")
            cut = await source.partition([[follower.id]])
            same = await source.move_leader(state.leader_id)
            bogus = await source.promote(follower.id)
            return cut, same, bogus
        finally:
            await source.close()
    cut, same, bogus = run(body())
    assert not cut.ok and "Fault service" in cut.text
    assert same.ok and "already the leader" in same.text
    assert not bogus.ok and bogus.text.endswith("etcdserver: can only promote a learner member")


def test_scrubber_reads_and_txn_checks_agree_with_real_etcd(real_etcd3, prefix):
    """The revision scrubber's reads, its previous/next change (a watch from
    history) and the txn view's compare check, against etcd 3.4 itself."""
    from raftui.source import txn

    async def body():
        source = ClusterSource(real_etcd3.endpoints)
        try:
            await _ready(source)
            a, other = prefix + "s/a", prefix + "other"
            revs = [(await source.put(k, v)).data for k, v in ((a, "one"), (other, "x"), (a, "two"), (other, "y"))]
            await source.delete(a)
            gone = (await source.put(other, "z")).data - 1
            view = await source.revision_view(prefix + "s/", True, revs[2])
            assert [(kv.key, kv.value) for kv in view.kvs] == [(a, "two")]
            assert [(c.kind, c.before) for c in view.changes] == [("changed", "one")]
            assert await source.scrub_change(prefix + "s/", True, revs[2], forward=False) == revs[0]
            assert await source.scrub_change(prefix + "s/", True, revs[0], forward=True) == revs[2]
            assert await source.scrub_change(prefix + "s/", True, gone + 1, forward=False) == gone   # the delete
            failed = await source.txn(txn.parse_compares(f'mod("{other}") < "{revs[1]}"'),
                                      [], txn.parse_ops(f"get {other}"))
            assert not failed.ok and failed.data.failed == (1,) and failed.data.checks[0].actual.mod_revision == gone + 1
        finally:
            await source.close()
    run(body())
