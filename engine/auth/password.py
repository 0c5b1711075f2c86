"""Password hashing: bcrypt at etcd's cost, done BEFORE a request is proposed.

etcd 3.4 hashes in its apply step (the clear password travels in the raft
log); raftnode hashes in the API layer instead, so the log, the WAL, peers
and snapshots only ever see the hash (etcd 3.5 moved the same way with its
hashedPassword field). Every member stores the proposer's hash: bcrypt's
salt is random, so it could not be recomputed on apply anyway.

bcrypt takes 72 bytes of a password at most. Go's bcrypt, in the x/crypto
etcd 3.4 vendors, ignores the bytes past 72; Python's bcrypt >= 5 refuses
them. Both here cut at 72 bytes, so a long password works as with etcd.

Hashing and checking cost ~50-100 ms of CPU (cost 10): callers run them off
the event loop (``asyncio.to_thread``).
"""
from __future__ import annotations

import bcrypt

# etcd's --bcrypt-cost default (bcrypt.DefaultCost in Go).
DEFAULT_COST = 10
MIN_COST, MAX_COST = 4, 31
_MAX_BYTES = 72


def _bytes(password: str | bytes) -> bytes:
    b = password.encode() if isinstance(password, str) else password
    return b[:_MAX_BYTES]


def hash_password(password: str | bytes, cost: int = DEFAULT_COST) -> str:
    """The bcrypt hash ("$2b$10$...", 60 ASCII characters) of password."""
    if not MIN_COST <= cost <= MAX_COST:
        cost = DEFAULT_COST  # etcd falls back to the default on a bad --bcrypt-cost
    return bcrypt.hashpw(_bytes(password), bcrypt.gensalt(cost)).decode("ascii")


def check_password(hashed: bytes, password: str | bytes) -> bool:
    """Does password match the stored hash? False for anything malformed."""
    try:
        return bcrypt.checkpw(_bytes(password), hashed)
    except (ValueError, TypeError):
        return False


def looks_hashed(value: str) -> bool:
    """A bcrypt hash as hash_password makes it: the apply step stores only
    values like this, so a clear password can never be stored by mistake."""
    return (len(value) == 60 and value[:4] in ("$2a$", "$2b$", "$2y$")
            and value[4:6].isdigit() and value[6] == "$")
