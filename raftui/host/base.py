"""ClusterHost: what the console needs from whoever runs the members locally.

Host mode (`raftui` without --endpoints) starts members as local processes
and can kill, restart, pause and resume them; attach mode has no host. The
app only talks to this interface, so the process runner can be swapped (our
`raftnode`, the real `etcd` for tests, something remote one day).
"""
from __future__ import annotations

import abc
import pathlib
from typing import Literal

ProcessState = Literal["running", "paused", "killed", "exited", "not started"]


class HostError(RuntimeError):
    """A member could not be started/stopped; the message is one line for the operator."""


class ClusterHost(abc.ABC):
    data_dir: pathlib.Path

    @property
    @abc.abstractmethod
    def names(self) -> list[str]:
        """Member names in order (n1, n2, ...)."""

    @property
    @abc.abstractmethod
    def endpoints(self) -> list[str]:
        """Client endpoints, host:port, in the order of `names`."""

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Client endpoint (as in `endpoints`) -> its member's /metrics base URL,
        for the members that serve one."""
        return {}

    @abc.abstractmethod
    def start(self) -> None:
        """Start every member that is not running (new cluster, or resume the one in data_dir)."""

    @abc.abstractmethod
    def kill(self, name: str) -> None:
        """kill -9 one member."""

    @abc.abstractmethod
    def restart(self, name: str) -> None:
        """Start a killed/exited member again with the same flags and data."""

    @abc.abstractmethod
    def pause(self, name: str) -> None:
        """SIGSTOP: the process stays, but answers nothing."""

    @abc.abstractmethod
    def resume(self, name: str) -> None:
        """SIGCONT after pause."""

    @abc.abstractmethod
    def state(self, name: str) -> ProcessState:
        ...

    @abc.abstractmethod
    def stop_all(self, timeout: float = 10.0, *, strays: bool = False) -> list[str]:
        """SIGTERM every member (SIGKILL after `timeout`); with `strays`, also
        a process running on a member's data dir that the host did not start.
        Returns the names still running afterwards."""

    def remove(self, name: str) -> None:
        """Stop a member the cluster no longer has and forget it (after MemberRemove)."""
        raise HostError(f"this host cannot remove {name}")
