"""Who is in the cluster: id, name, peer and client URLs, learner or voter.

Raft's own config says only which ids vote; the rest of a member's record
travels in the ConfChange's context (raftuipb.ConfChangeContext) and is kept
here, in the store's SQLite database, so that it is part of every snapshot
a new member receives, and survives restarts.
"""
from __future__ import annotations

import dataclasses
import json
import logging

from engine.proto import rpc_pb2

log = logging.getLogger("engine.server")


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


class Membership:
    """The member table, kept in the store's backend (engine/mvcc/backend.py)
    so each change is part of the apply that carries it and of every
    snapshot."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.members: dict[int, MemberRecord] = {}
        self.removed: set[int] = set()
        self.reload()

    def reload(self) -> None:
        """(Re)read the table. A row that is not a member record (a store
        restored from a hostile snapshot) is logged and left out: it never
        stops a member from starting or installing a snapshot."""
        self.members = {}
        self.removed = set()
        for mid, text in self._backend.members():
            try:
                d = json.loads(text)
                if not isinstance(d, dict):
                    raise ValueError("not an object")
                if d.get("removed"):
                    self.removed.add(mid)
                    continue
                rec = MemberRecord(**d)
                urls = (rec.peer_urls, rec.client_urls)
                if (not isinstance(rec.id, int) or not isinstance(rec.name, str)
                        or not all(isinstance(us, list) and all(isinstance(u, str) for u in us)
                                   for us in urls)):
                    raise ValueError("fields of the wrong type")
                rec.is_learner = bool(rec.is_learner)
            except (ValueError, TypeError) as e:
                log.error("member table: row for %s is not a member record, ignored: %s (%r)",
                          f"{mid:x}" if isinstance(mid, int) else repr(mid), e, text[:200] if isinstance(text, str) else text)
                continue
            self.members[mid] = rec

    def _write(self, mid: int, record: dict) -> None:
        self._backend.put_member(mid, json.dumps(record, sort_keys=True))

    def add(self, m: MemberRecord) -> None:
        self.members[m.id] = m
        self._write(m.id, dataclasses.asdict(m))

    def promote(self, mid: int) -> None:
        m = self.members.get(mid)
        if m is not None:
            m.is_learner = False
            self._write(mid, dataclasses.asdict(m))

    def demote(self, mid: int) -> None:
        m = self.members.get(mid)
        if m is not None:
            m.is_learner = True
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
