"""Free TCP ports on 127.0.0.1.

The OS picks the port (bind to 0). Between closing the probe socket and the
real server binding it, another process could take the port; that window is
short, and within this process we never hand out the same port twice, which
is what matters when one test starts several servers at once.
"""
from __future__ import annotations

import socket
import threading

HOST = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Return `count` distinct ports that were free on `host` a moment ago."""
    if count < 0:
        raise ValueError("count must be >= 0")
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            attempts = 0
            while len(ports) < count:
                attempts += 1
                if attempts > 100 * (count + 1):
                    raise RuntimeError(f"could not find {count} free ports on {host}")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # Keep every probe open until all are chosen, so the OS cannot
                # give us the same port twice in this call.
                probes.append(s)
                s.bind((host, 0))
                port = s.getsockname()[1]
                if port in _handed_out:
                    continue
                ports.append(port)
            _handed_out.update(ports)
    finally:
        for s in probes:
            s.close()
    return ports


def free_port(host: str = HOST) -> int:
    """Return one port that was free on `host` a moment ago."""
    return free_ports(1, host)[0]
