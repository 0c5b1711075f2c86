"""Saved histories: one JSON object per line, replayed by `raftui lincheck FILE`.

The first line is a header, the rest are checker.py's events in the order
they were recorded::

    {"type": "meta", "format": "raftui-lincheck-history", "version": 1,
     "initial": null, "keys": ["lincheck/3f2a/k0", ...], "clients": 4, "rate": 20,
     "seed": 1234, "endpoints": ["127.0.0.1:2379", ...], "saved": "2026-12-06T19:30:00Z"}
    {"id": 1, "type": "invoke", "process": 0, "f": "write", "key": "lincheck/3f2a/k0",
     "value": "c0-1", "time": 123456789}
    {"id": 1, "type": "ok", "process": 0, "f": "write", "key": "lincheck/3f2a/k0",
     "value": "c0-1", "time": 123999999, "node": "m2"}
    {"type": "nemesis", "what": "partition {n1} | {n2, n3}", "time": 124000000}

`time` is the recording client's monotonic clock in nanoseconds. A file
without the header (tests/jepsen's dump_history) is read too.
"""
from __future__ import annotations

import json
import os
import time
from typing import Iterable

FORMAT = "raftui-lincheck-history"
MAX_LINE = 1 << 20


class HistoryError(ValueError):
    """A history file that cannot be read: the message names the line."""


def save(path: str, events: Iterable[dict], **meta) -> None:
    """Write atomically (a temp file renamed into place)."""
    head = {"type": "meta", "format": FORMAT, "version": 1, "initial": None,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, sort_keys=True) + "\n")
        for e in events:
            f.write(json.dumps(e, sort_keys=True, default=repr) + "\n")
    os.replace(tmp, path)


def load(path: str) -> tuple[dict, list[dict]]:
    """(header, events); HistoryError for a file that is not a history."""
    meta: dict = {}
    events: list[dict] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if len(line) > MAX_LINE:
                    raise HistoryError(f"{path}:{n}: a line longer than {MAX_LINE} bytes")
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HistoryError(f"{path}:{n}: not JSON: {exc.msg}") from None
                if not isinstance(e, dict):
                    raise HistoryError(f"{path}:{n}: an event is a JSON object")
                if e.get("type") == "meta":
                    if e.get("format") not in (None, FORMAT):
                        raise HistoryError(f"{path}:{n}: format {e.get('format')!r} is not {FORMAT}")
                    meta = e
                    continue
                if e.get("type") != "nemesis" and not {"type", "f", "key", "time", "id"} <= set(e):
                    raise HistoryError(f"{path}:{n}: an event needs id, type, f, key and time")
                if not isinstance(e.get("time"), (int, float)) or isinstance(e.get("time"), bool):
                    raise HistoryError(f"{path}:{n}: time must be a number")
                events.append(e)
    except OSError as exc:
        raise HistoryError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise HistoryError(f"{path}: not UTF-8 text") from None
    return meta, events
