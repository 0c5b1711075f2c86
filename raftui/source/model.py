"""The console's model of a cluster: plain frozen dataclasses, no gRPC, no UI.

A `ClusterState` is one consistent picture at one moment. The source builds a
new one after every poll, action or watch event and never mutates an old
one, so a widget may keep a reference and compare it with the next.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

Role = Literal["leader", "follower", "candidate", "learner", "unknown"]
# up/down/unknown come from polling; paused/killed are overlaid by host mode,
# partitioned by the Fault service's status.
Health = Literal["up", "down", "unknown", "paused", "killed", "partitioned"]


@dataclasses.dataclass(frozen=True)
class PeerProgress:
    """The leader's view of one member's replication (Inspect only)."""
    member_id: int
    match: int
    next: int
    state: str          # probe / replicate / snapshot
    inflight: int
    recent_active: bool
    paused: bool = False


@dataclasses.dataclass(frozen=True)
class RaftConfig:
    """A member's view of the configuration (Inspect only). In a joint
    configuration (C_old,new) both `voters` (C_new) and `voters_outgoing`
    (C_old) must each have a majority for anything to commit."""
    voters: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()    # non-empty only while a joint configuration is in force
    learners_next: tuple[int, ...] = ()      # voters of C_old that become learners on leaving it
    auto_leave: bool = False                 # the leader leaves the joint config by itself

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    id: int
    endpoint: str                    # host:port the console talks to
    client_urls: tuple[str, ...] = ()
    peer_urls: tuple[str, ...] = ()
    is_learner: bool = False
    role: Role = "unknown"
    health: Health = "unknown"
    term: int = 0
    commit_index: int = 0            # etcd Status.raftIndex
    applied_index: int = 0           # etcd Status.raftAppliedIndex
    last_index: int | None = None    # Inspect only
    db_size: int = 0
    db_size_in_use: int = 0
    leader_id: int = 0
    revision: int = 0                # header.revision of the member's answer
    version: str = ""
    alarms: tuple[str, ...] = ()     # "NOSPACE", "CORRUPT"
    errors: tuple[str, ...] = ()     # Status.errors and our own last call error
    progress: PeerProgress | None = None  # from the leader's Inspect view
    inspect: bool | None = None      # Inspect service present? None: not known yet
    loop_lag_ms: int | None = None   # Inspect only: how late the member's ticker woke, worst of the last seconds
    config: RaftConfig | None = None  # Inspect only: the voters it knows, C_old and C_new while joint

    @property
    def label(self) -> str:
        return self.name or f"{self.id:x}"


@dataclasses.dataclass(frozen=True)
class TimelineLine:
    """One line of the console's timeline: what the console saw, in the
    order it learned it, and what members reported, at the time it
    happened. (Not engine/server's TimelineEvent, which is a member's own
    record of its leader changes, sent over Inspect.)"""
    at: float                        # wall clock, seconds (a member's own clock for what it reported)
    kind: str                        # leader, election, term, down, up, alarm, compact, defrag, action, error, ...
    text: str
    ok: bool = True
    key: tuple | None = dataclasses.field(default=None, compare=False)   # (leader id, term) of a leader change
    # The order the console learned of it (1, 2, ...).
    # 0: history a member sent about the time before the console attached.
    seq: int = dataclasses.field(default=0, compare=False)
    # Stamped by a member's clock when it happened (Inspect's leader events,
    # what its streamed status showed): placed among the other lines by that
    # time, not by when the console learned it (a campaign goes below the
    # leader it made). See timeline.prepend.
    reported: bool = dataclasses.field(default=False, compare=False)


@dataclasses.dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclasses.dataclass(frozen=True)
class KeyPage:
    """One Range of keys, ascending whichever way it was read."""
    keys: tuple[KeyValue, ...]
    more: bool                       # keys beyond this page, in the direction it was read
    count: int                       # keys in the range read (etcd's Range count: exact, not limited)


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    at: float
    type: str                        # PUT / DELETE / COMPACTED / CANCELED / CREATED
    key: str
    value: str
    mod_revision: int


@dataclasses.dataclass(frozen=True)
class WalEntry:
    index: int
    term: int
    type: str                        # normal / conf change
    text: str
    committed: bool
    applied: bool


@dataclasses.dataclass(frozen=True)
class WatcherInfo:
    member: str
    watch_id: int
    key: str
    range_end: str
    start_revision: int
    synced: bool
    events_sent: int
    behind: int = 0                  # revisions between the member's head and what the watcher was sent up to
    pending: int = 0                 # events the member holds for it, not yet taken by its stream
    next_revision: int = 0
    peer: str = ""                   # the client's address, as the member's gRPC saw it
    console: bool = False            # this console's own live watch


@dataclasses.dataclass(frozen=True)
class RateSample:
    """One poll's rates, for the sparklines."""
    at: float
    writes_per_s: float              # revision advance per second (cluster)
    commit_per_s: tuple[tuple[str, float], ...]   # per member name
    apply_lag: tuple[tuple[str, int], ...]
    from_inspect: bool = False       # the members' own counters (Inspect.Rates), not polled deltas
    latency: tuple = ()              # ((member label, raftui.source.metrics.MemberLatency), ...), from /metrics


@dataclasses.dataclass(frozen=True)
class LiveWatch:
    key: str
    prefix: bool
    events: tuple[WatchEvent, ...] = ()
    status: str = "opening"          # opening / watching / closed: <why>
    # The revision the stream said it is complete up to (its last response's
    # header: events, or a progress answer, which the member gives only once
    # the watch is synced): head - revision is how far behind it is.
    revision: int = 0
    endpoint: str = ""               # the member it is open on
    watch_id: int = -1

    def behind(self, head: int) -> int | None:
        return max(0, head - self.revision) if self.revision and head else None


@dataclasses.dataclass(frozen=True)
class ClusterState:
    members: tuple[Member, ...] = ()
    cluster_id: int = 0
    revision: int = 0
    compact_revision: int = 0
    leader_id: int = 0
    term: int = 0
    timeline: tuple[TimelineLine, ...] = ()   # newest first
    rates: tuple[RateSample, ...] = ()         # oldest first
    watch: LiveWatch | None = None
    wal: tuple[WalEntry, ...] = ()             # of `wal_member`, ascending index
    wal_member: int = 0
    watchers: tuple[WatcherInfo, ...] = ()
    polled_at: float = 0.0
    inspect: bool | None = None                # any member serves Inspect? None: unknown
    fault: bool | None = None                  # Fault service available?
    # Each member's fault rules as last polled: ((member id, faults.FaultView), ...);
    # links.matrix() reads every directed link from them.
    faults: tuple = ()

    def member(self, member_id: int) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    @property
    def leader(self) -> Member | None:
        return self.member(self.leader_id) if self.leader_id else None


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """What an action did: ok with a text, or etcd's error message."""
    ok: bool
    text: str
    data: object = None              # e.g. a list of KeyValue for a read

    @classmethod
    def fail(cls, text: str) -> "ActionResult":
        return cls(False, text)
