"""A member's disk as the simulator sees it: what was written, and what of it
would survive a power cut.

The node (engine/server/node.py, engine/server/raftlog.py) writes Raft's
state as records appended to one WAL: entries, then the hard state, in one
write; `fsync` makes every record written so far durable (the WAL is one
sequential file, so an fsync also flushes earlier unsynced writes, such as a
commit-only hard state written with sync=False). A snapshot installed from
the leader is a snap file plus a WAL marker, fsynced.

    durable:  what an fsync has covered              -> survives any crash
    pending:  records written but not yet fsynced    -> a crash keeps a random
              prefix of them (none, some, all): the page cache may have
              flushed part of the file; a torn record is cut at restart

A crash therefore loses, at least, everything a Ready was still writing when
it happened, and at most nothing (the OS flushed it all): both extremes and
everything between are legal outcomes, and the simulator draws one.
"""
from __future__ import annotations

import random

from engine.proto import raft_pb2 as pb
from engine.raft import MemoryStorage


class SimDisk:
    def __init__(self, durable: MemoryStorage) -> None:
        # Invariant: `durable` is exactly what a restart reads back (the
        # node's open_raft_log: newest snapshot marker, last hard state,
        # entries after the snapshot).
        self.durable = durable
        self.pending: list[tuple[str, object]] = []
        self.fsyncs = 0
        # Called with (entries, term of the entry before them) when entries
        # become durable: the simulator's log-matching registry.
        self.on_durable = None

    def write(self, hard_state: pb.HardState | None, entries) -> None:
        """Append records (entries first, then the hard state: one WAL write)
        without waiting for them to be durable."""
        if entries:
            self.pending.append(("ents", list(entries)))
        if hard_state is not None and (hard_state.term or hard_state.vote or hard_state.commit):
            self.pending.append(("hs", pb.HardState(term=hard_state.term, vote=hard_state.vote,
                                                    commit=hard_state.commit)))

    def fsync(self) -> None:
        self.fsyncs += 1
        for rec in self.pending:
            self._apply(rec)
        self.pending = []

    def save_snapshot(self, snap: pb.Snapshot) -> None:
        """Snap file + WAL marker, fsynced (the marker's fsync flushes every
        record before it as well)."""
        self.pending.append(("snap", snap))
        self.fsync()

    def compact(self, index: int, conf_state: pb.ConfState, data: bytes, keep: int) -> None:
        """The host's own snapshot + log compaction (node._take_snapshot):
        a durable snap file and marker, then the log before index-keep goes."""
        self.fsync()
        d = self.durable
        if index <= d.snapshot().metadata.index or index > d.last_index():
            return
        d.create_snapshot(index, conf_state, data)
        if index - keep > d.first_index():
            d.compact(index - keep)

    def crash(self, rng: random.Random) -> int:
        """Power cut: keep a random prefix of the unsynced records. Returns
        how many were kept. Half the time nothing unsynced survives (the
        worst case, and the one the issue names); otherwise any prefix."""
        keep = 0 if rng.random() < 0.5 else rng.randrange(len(self.pending) + 1)
        for rec in self.pending[:keep]:
            self._apply(rec)
        self.pending = []
        return keep

    def _apply(self, rec: tuple[str, object]) -> None:
        s = self.durable
        kind, val = rec
        if kind == "ents":
            if self.on_durable is not None:
                self.on_durable(val, self.term(val[0].index - 1))
            s.append(val)
        elif kind == "hs":
            s.set_hard_state(val)
        else:
            s.apply_snapshot(val)

    def term(self, index: int) -> int | None:
        """Term of the durable entry at index (None: not durably held)."""
        s = self.durable
        if index < s.first_index() - 1 or index > s.last_index():
            return None
        return s.term(index)
