"""Free TCP ports on 127.0.0.1: engine.cli.launch's, under the names tests use."""
from __future__ import annotations

from engine.cli.launch import HOST, free_port, free_ports

__all__ = ["HOST", "free_port", "free_ports"]
