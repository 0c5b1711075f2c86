"""Revisions: the clock of the MVCC store.

A revision is a pair ``(main, sub)``. ``main`` is the store-wide revision a
write transaction produces (it grows by one per transaction that changed
something); ``sub`` numbers the changes inside that transaction, from 0.
Plain ``(main, sub)`` tuples are used on hot paths; ``Revision`` is a
NamedTuple with the same ordering for readable code and tests.

On disk a revision is etcd's 17-byte key: 8-byte big-endian ``main``, a
``'_'``, 8-byte big-endian ``sub``. Big-endian unsigned integers compare
byte-wise in numeric order, so SQLite's memcmp ordering of BLOB keys is the
revision order and a range of revisions is a range of keys. A deletion is
stored under the same 17 bytes followed by ``'t'`` (etcd's tombstone mark):
it sorts right after the plain key of the same revision, which never exists.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

REV_BYTES_LEN = 17
TOMBSTONE_MARK = b"t"
MARKED_REV_BYTES_LEN = REV_BYTES_LEN + 1

_REV = struct.Struct(">QcQ")
_pack = _REV.pack
_unpack_from = _REV.unpack_from


class Revision(NamedTuple):
    main: int
    sub: int = 0


def rev_to_bytes(main: int, sub: int = 0) -> bytes:
    return _pack(main, b"_", sub)


def tombstone_to_bytes(main: int, sub: int = 0) -> bytes:
    return _pack(main, b"_", sub) + TOMBSTONE_MARK


def bytes_to_rev(b: bytes) -> Revision:
    main, _, sub = _unpack_from(b)
    return Revision(main, sub)


def is_tombstone(b: bytes) -> bool:
    return len(b) == MARKED_REV_BYTES_LEN and b[-1:] == TOMBSTONE_MARK


def lower_bound_bytes(main: int) -> bytes:
    """First possible key of revision ``main`` (its sub 0)."""
    return _pack(main, b"_", 0)
