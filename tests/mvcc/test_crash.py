"""Kill -9 a process in the middle of applying batches; the store must reopen
at a batch boundary, with the data and the consistent index agreeing, and a
replay of the log from there must give the same store as an uninterrupted run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.mvcc.helpers import Harness, internal, put_req, txn_req

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from engine.mvcc import Applier
    from tests.mvcc.helpers import internal, put_req, txn_req
    from tests.mvcc.test_crash import log
    a = Applier(sys.argv[1])
    entries = log()
    i = a.consistent_index
    while i < len(entries):
        batch = entries[i:i + 7]
        a.apply_batch(i + len(batch), batch, indexes=list(range(i + 1, i + len(batch) + 1)))
        i += len(batch)
        print(i, flush=True)
    print("done", flush=True)
""")


def log() -> list:
    """The committed log: entry i (1-based) writes b/<i>, every 5th is a txn."""
    out = []
    for i in range(1, 3001):
        if i % 5 == 0:
            out.append(internal(txn_req([], [put_req(f"b/{i}", "x" * 50), put_req("last", str(i))], []), i))
        else:
            out.append(internal(put_req(f"b/{i}", "y" * 50), i))
    return out


def test_kill_9_mid_apply_then_replay(tmp_path):
    path = str(tmp_path / "db")
    p = subprocess.Popen([sys.executable, "-c", WRITER.format(root=ROOT), path],
                         stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 700 and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line or line.strip() == "done":
            break
        seen = int(line)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert seen >= 700, "writer too slow or finished early"

    h = Harness(path)
    ci = h.a.consistent_index
    assert ci >= seen and ci % 7 == 0  # a batch boundary, nothing half-applied
    present = {kv.key for kv in h.get("b/", "b0").kvs}
    assert present == {f"b/{i}".encode() for i in range(1, ci + 1)}
    # the server replays the whole log from the start: applied entries skip
    entries = log()
    for s in range(0, len(entries), 11):
        idx = list(range(s + 1, min(s + 11, len(entries)) + 1))
        h.a.apply_batch(idx[-1], entries[s:s + 11], indexes=idx)

    ref = Harness(str(tmp_path / "ref"))
    ref.a.apply_batch(len(entries), entries, indexes=list(range(1, len(entries) + 1)))
    assert h.a.hash_kv() == ref.a.hash_kv()
    assert h.rev == ref.rev == len(entries) + 1
    h.close()
    ref.close()
