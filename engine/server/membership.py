"""Who is in the cluster: id, name, peer and client URLs, learner or voter.

Raft's own config says only which ids vote; the rest of a member's record
travels in the ConfChange's context (raftuipb.ConfChangeContext) and is kept
here, in the store's SQLite database, so that it is part of every snapshot
a new member receives, and survives restarts.
"""
from __future__ import annotations

import dataclasses
import json

from engine.proto import rpc_pb2


@dataclasses.dataclass
class MemberRecord:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False

    def to_pb(self) -> rpc_pb2.Member:
        return rpc_pb2.Member(ID=self.id, name=self.name, peerURLs=self.peer_urls,
                              clientURLs=self.client_urls, isLearner=self.is_learner)

    @classmethod
    def from_pb(cls, m: rpc_pb2.Member) -> "MemberRecord":
        return cls(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)


_SCHEMA = "CREATE TABLE IF NOT EXISTS members (id BLOB PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID"


class Membership:
    """The member table. `db` is the store's sqlite3 connection; the caller
    makes each change part of the apply that carries it."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.members: dict[int, MemberRecord] = {}
        self.removed: set[int] = set()
        self.reload()

    @property
    def _db(self):
        return self._backend._db  # the store's connection (reopened on restore)

    def reload(self) -> None:
        self._db.execute(_SCHEMA)
        self.members = {}
        self.removed = set()
        for rid, text in self._db.execute("SELECT id, record FROM members"):
            d = json.loads(text)
            mid = int.from_bytes(rid, "big")
            if d.get("removed"):
                self.removed.add(mid)
            else:
                self.members[mid] = MemberRecord(**d)

    def _write(self, mid: int, record: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO members (id, record) VALUES (?, ?)",
                         (mid.to_bytes(8, "big"), json.dumps(record, sort_keys=True)))

    def add(self, m: MemberRecord) -> None:
        self.members[m.id] = m
        self._write(m.id, dataclasses.asdict(m))

    def promote(self, mid: int) -> None:
        m = self.members.get(mid)
        if m is not None:
            m.is_learner = False
            self._write(mid, dataclasses.asdict(m))

    def remove(self, mid: int) -> None:
        self.members.pop(mid, None)
        self.removed.add(mid)
        self._write(mid, {"removed": True})

    def set_attributes(self, mid: int, name: str, client_urls: list[str]) -> None:
        m = self.members.get(mid)
        if m is not None:
            m.name = name
            m.client_urls = list(client_urls)
            self._write(mid, dataclasses.asdict(m))

    def update_peer_urls(self, mid: int, urls: list[str]) -> None:
        m = self.members.get(mid)
        if m is not None:
            m.peer_urls = list(urls)
            self._write(mid, dataclasses.asdict(m))

    def sorted(self) -> list[MemberRecord]:
        return [self.members[i] for i in sorted(self.members)]
