"""Snapshot data as a file reference instead of bytes in RAM.

A raft Snapshot's `data` is either the store's bytes (tests, the simulator,
small stores) or a *file reference*: a magic prefix followed by the path of a
file that holds the bytes. The transport streams a referenced file from disk
and deletes it after sending; on the receiving side it spools the chunks to a
file and hands the node a reference to that file (the node owns it from then
on and deletes it after installing).

The magic starts with a NUL byte and can never begin a SQLite file ("SQLite
format 3\\0"), so a real snapshot is never mistaken for a reference. A
reference is only ever made by this member: bytes from a peer that look like
one are refused by the transport.
"""
from __future__ import annotations

import os

MAGIC = b"\x00raftui-snapshot-file\x00"


def file_ref(path: str) -> bytes:
    """snapshot.data that stands for the contents of `path`."""
    if not path:
        raise ValueError("empty snapshot path")
    return MAGIC + os.fsencode(os.path.abspath(path))


def ref_path(data: bytes) -> str | None:
    """The path inside a file reference, or None if `data` is plain bytes."""
    if not data.startswith(MAGIC):
        return None
    return os.fsdecode(bytes(data[len(MAGIC):]))


def discard(data: bytes) -> None:
    """Delete the file behind a file reference (no-op for plain bytes)."""
    path = ref_path(data)
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # best effort: a leftover file is only disk space
        pass
