"""engine.mvcc: the state machine committed Raft entries are applied to.

etcd v3's storage semantics in Python: revisions (``revision``), the
in-memory key index (``key_index``), the SQLite backend (``backend``), the
key-value store with txns and compaction (``kvstore``), leases (``lease``),
alarms and quota (``alarm``, ``quota``), watchers (``watch``), and the
applier that ties them to the log (``apply``). No Raft, no network, no
asyncio here.

Entry point for the server: ``Applier`` (see apply.py).
"""
from .apply import Applier, open_applier
from .errors import MVCCError

__all__ = ["Applier", "open_applier", "MVCCError"]
