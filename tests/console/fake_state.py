"""A fixed, deterministic ClusterState for UI snapshot tests (no network)."""
from __future__ import annotations

from raftui.source.model import (ClusterState, KeyValue, LiveWatch, Member, PeerProgress, RateSample,
                                 TimelineLine, WalEntry, WatchEvent, WatcherInfo)

T0 = 1_700_000_000.0   # 2023-11-14 22:13:20 UTC


def _member(i: int, **kw) -> Member:
    base = dict(name=f"n{i}", id=0x1000 + i, endpoint=f"127.0.0.1:{2378 + i}",
                client_urls=(f"http://127.0.0.1:{2378 + i}",), role="follower", health="up", term=7,
                commit_index=1042, applied_index=1042, last_index=1043, db_size=2_457_600,
                db_size_in_use=1_228_800, leader_id=0x1001, revision=512, version="raftnode",
                inspect=True)
    base.update(kw)
    return Member(**base)


MEMBERS = (
    _member(1, role="leader", last_index=1044, loop_lag_ms=3,
            progress=PeerProgress(0x1001, 1044, 1045, "replicate", 0, True)),
    _member(2, loop_lag_ms=140, progress=PeerProgress(0x1002, 1043, 1045, "replicate", 1, True)),
    _member(3, health="down", role="unknown", term=6, commit_index=990, applied_index=990,
            last_index=990, errors=("context deadline exceeded",),
            progress=PeerProgress(0x1003, 990, 991, "probe", 0, False, paused=True)),
)

TIMELINE = tuple(reversed((
    TimelineLine(T0, "attach", "attached to 3 members, leader n2, term 6"),
    TimelineLine(T0 + 5, "action", "put /app/config at revision 510"),
    TimelineLine(T0 + 9, "down", "n3 is down (context deadline exceeded)", ok=False),
    TimelineLine(T0 + 11, "leader", "leader is now n1 (term 7)"),
    TimelineLine(T0 + 14, "defrag", "defragmented n2: db 3.1 MB -> 2.5 MB"),
    TimelineLine(T0 + 20, "error", "get /app at revision 3: etcdserver: mvcc: required revision has been compacted",
                  ok=False),
)))

WAL = tuple(
    WalEntry(i, 7 if i > 1040 else 6, "conf change" if i == 1039 else "normal",
             "conf AddLearnerNode 1004" if i == 1039 else f'put "/app/k{i % 7}" = "v{i}"',
             committed=i <= 1042, applied=i <= 1042)
    for i in range(1030, 1045)
)

RATES = tuple(
    RateSample(T0 + s, float((s * 7) % 23), tuple((f"n{i}", float((s * (i + 3)) % 17)) for i in (1, 2, 3)),
               (("n1", 0), ("n2", s % 3), ("n3", 0)))
    for s in range(40)
)

WATCH = LiveWatch("/app/", True, tuple(
    WatchEvent(T0 + 30 + i, "PUT" if i % 3 else "DELETE", f"/app/k{i}", f"v{i}", 505 + i) for i in range(6)
), "watching")

STATE = ClusterState(
    members=MEMBERS, cluster_id=0xC1, revision=512, compact_revision=300, leader_id=0x1001, term=7,
    timeline=TIMELINE, rates=RATES, watch=WATCH, wal=WAL, wal_member=0x1001,
    watchers=(WatcherInfo("n1", 1, "/app/", "/app0", 0, True, 42),
              WatcherInfo("n2", 1, "/jobs", "", 480, False, 3, behind=29, pending=12, next_revision=484)),
    polled_at=T0 + 40, inspect=True, fault=True,
)

KEYS = tuple(KeyValue(f"/app/k{i}", "", 100 + i, 400 + i, 1 + i % 4) for i in range(30))
HISTORY = (KeyValue("/app/k1", "v3", 101, 401, 3), KeyValue("/app/k1", "v2", 101, 250, 2),
           KeyValue("/app/k1", "v1", 101, 101, 1))


class FakeSource:
    """Just enough of ClusterSource for a screen that does not poll (live=False)."""

    def __init__(self, state: ClusterState = STATE) -> None:
        self.state = state

    async def close(self) -> None:
        pass
