"""Cluster alarms (NOSPACE, CORRUPT): which member raised which alarm.

Alarms are cluster state: they change only by applying an AlarmRequest from
the log, so every member agrees on them and on whether writes are refused.
They are persisted in the backend's alarm table, in the apply batch's
transaction. Semantics of etcd's ``etcdserver/api/v3alarm``.
"""
from __future__ import annotations

from engine.proto import rpc_pb2

from .backend import Backend

NONE = rpc_pb2.NONE
NOSPACE = rpc_pb2.NOSPACE
CORRUPT = rpc_pb2.CORRUPT


class AlarmStore:
    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self._alarms: set[tuple[int, int]] = set()  # (member_id, alarm type)
        self.load()

    def load(self) -> None:
        self._alarms = set(self._b.alarms())
        self._refresh()

    def _refresh(self) -> None:
        # Checked before every applied request: keep them as plain flags.
        self.nospace = any(a == NOSPACE for _, a in self._alarms)
        self.corrupt = any(a == CORRUPT for _, a in self._alarms)

    def activate(self, member_id: int, alarm: int) -> tuple[int, int]:
        m = (member_id, alarm)
        if m not in self._alarms:
            self._alarms.add(m)
            self._b.put_alarm(member_id, alarm)
            self._refresh()
        return m

    def deactivate(self, member_id: int, alarm: int) -> tuple[int, int] | None:
        m = (member_id, alarm)
        if m not in self._alarms:
            return None
        self._alarms.discard(m)
        self._b.delete_alarm(member_id, alarm)
        self._refresh()
        return m

    def get(self, alarm: int = NONE) -> list[tuple[int, int]]:
        """Alarms of one type, or all of them for NONE, sorted."""
        return sorted(m for m in self._alarms if alarm == NONE or m[1] == alarm)

    def active(self, alarm: int) -> bool:
        if alarm == NOSPACE:
            return self.nospace
        if alarm == CORRUPT:
            return self.corrupt
        return any(m[1] == alarm for m in self._alarms)
