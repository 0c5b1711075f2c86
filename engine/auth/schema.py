"""The auth store's tables in the member's SQLite db: etcd's auth buckets.

etcd keeps auth in three bbolt buckets of the backend ("auth" with
authEnabled and authRevision, "authUsers", "authRoles"), so it is written
in the same transactions as the data, survives restarts and travels in
snapshots. Here the same, in the backend's db::

    auth_meta   name TEXT PRIMARY KEY -> value INTEGER   "enabled" (0/1), "revision"
    auth_users  name BLOB PRIMARY KEY -> user BLOB       serialized authpb.User
    auth_roles  name BLOB PRIMARY KEY -> role BLOB       serialized authpb.Role

Names are the raw name bytes, so SQLite's BLOB order is etcd's key order
(user and role lists come out sorted as etcd lists them).

The backend owns the db file: it runs ``SCHEMA`` with its own, and its
restore check accepts these tables and copies their rows through ``TABLES``
(columns and a row check each), as for its own tables. Nothing here opens a
connection.
"""
from __future__ import annotations

from engine.proto import auth_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_users (name BLOB PRIMARY KEY, user BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_roles (name BLOB PRIMARY KEY, role BLOB NOT NULL) WITHOUT ROWID;
"""

META_KEYS = ("enabled", "revision")


class BadRow(ValueError):
    """A row of a snapshot's auth table that is not ours (the backend turns
    it into its InvalidSnapshot)."""


def _check_meta(name, value):
    if type(name) is not str or type(value) is not int or name not in META_KEYS or value < 0:
        raise BadRow("auth_meta row of the wrong type")
    return name, value


def _check_named(msg_type, what: str):
    def check(name, blob):
        if type(name) is not bytes or type(blob) is not bytes:
            raise BadRow(f"{what} row of the wrong type")
        try:
            rec = msg_type.FromString(blob)
        except Exception:
            raise BadRow(f"{what} row that is not a {msg_type.__name__}") from None
        if rec.name != name:
            raise BadRow(f"{what} row whose name is not its key")
        return name, blob
    return check


_check_user = _check_named(auth_pb2.User, "auth_users")
_check_role = _check_named(auth_pb2.Role, "auth_roles")

# table -> (columns read and written, row check): for the backend's copy of
# an untrusted snapshot, exactly like its own tables.
TABLES = {
    "auth_meta": ("name, value", _check_meta),
    "auth_users": ("name, user", _check_user),
    "auth_roles": ("name, role", _check_role),
}
