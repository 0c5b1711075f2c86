"""Hosted members' health: what the members answer first, the host's word second.

The host knows what the console last did to a process (killed it, paused
it); the members know whether they run. A member killed from outside and
started again by hand answers, so it is up, whatever the host remembers.
Only a member that does not answer gets the host's explanation: paused
(SIGSTOP: the process is there but silent), killed, or its process exited.
No UI here, and no I/O but the host's look at /proc.
"""
from __future__ import annotations

import dataclasses
import socket

from raftui.source.model import ClusterState

from .base import ClusterHost

ANSWERING = ("up", "partitioned")      # partitioned members answer the console; their peers are cut


def with_process_health(state: ClusterState, host: ClusterHost) -> ClusterState:
    """`state` with the health of hosted members that do not answer explained by their process."""
    hosted = set(host.names)
    members = []
    changed = False
    for m in state.members:
        if m.health not in ANSWERING and m.name in hosted:
            process = host.state(m.name)
            health, note = m.health, ""
            if process == "paused":
                health = "paused"
            elif process == "killed":
                health = "killed"
            elif process == "exited":
                health, note = "down", f"its process exited (see {m.name}.log)"
            if health != m.health or (note and note not in m.errors):
                m = dataclasses.replace(m, health=health, errors=(*m.errors, note) if note else m.errors)
                changed = True
        members.append(m)
    return dataclasses.replace(state, members=tuple(members)) if changed else state


def still_listening(host: ClusterHost, timeout: float = 0.3) -> list[tuple[str, str]]:
    """(name, endpoint) of every hosted member whose client port still accepts
    connections: after stopping them all, anything here is a member still
    running (one started by hand, which the host does not know as its child).
    Blocking: call it off the UI loop."""
    out = []
    for name, endpoint in zip(host.names, host.endpoints):
        where, _, port = endpoint.rpartition(":")
        try:
            with socket.create_connection((where or "127.0.0.1", int(port)), timeout=timeout):
                out.append((name, endpoint))
        except (OSError, ValueError):
            pass
    return out


def log_tail(host: ClusterHost, name: str, lines: int = 3, limit: int = 4096) -> str:
    """The last lines of a hosted member's log (why it exited), "" if none.
    Blocking (a file read): call it off the UI loop."""
    path = getattr(host, "log_path", None)
    if path is None:
        return ""
    try:
        with open(path(name), "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail.strip().splitlines()[-lines:] if line.strip())
