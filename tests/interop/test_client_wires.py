"""Both client wires behind real raftnode processes, judged by the real etcdctl.

The default (our own HTTP/2 server, engine/transport/h2) is what the rest of
the suite runs against; this keeps the way back (RAFTNODE_CLIENT_WIRE=grpc,
grpc.aio) honest, and checks each member says which one it serves."""
import os
import queue
import subprocess
import threading
import time

import pytest

from tests.support.etcd import etcdctl
from tests.support.raftnode import start_raftnode_cluster
from tests.support.require import require_etcd

WIRES = {"h2": "HTTP/2: engine/transport/h2", "grpc": "grpc.aio"}


@pytest.mark.parametrize("wire", [None, "grpc"], ids=["default", "grpc"])
def test_etcdctl_against_each_client_wire(tmp_path, monkeypatch, wire):
    require_etcd()
    if wire is None:
        monkeypatch.delenv("RAFTNODE_CLIENT_WIRE", raising=False)
    else:
        monkeypatch.setenv("RAFTNODE_CLIENT_WIRE", wire)
    with start_raftnode_cluster(tmp_path, size=1, fault_injection=False) as c:
        eps = c.endpoints
        assert etcdctl(eps, "put", "wire/[/]", "v1", check=True).stdout.strip() == "OK"
        assert etcdctl(eps, "put", "wire/[/]", "v2", check=True).stdout.strip() == "OK"
        got = etcdctl(eps, "get", "wire/[/]", "--rev", "2", "--print-value-only", check=True).stdout
        assert got.strip() == "v1"
        # A bidi watch replaying history: read its events, then stop it.
        assert _watch_lines(eps, want=6) == ["PUT", "wire/[/]", "v1", "PUT", "wire/[/]", "v2"]
        lease = etcdctl(eps, "lease", "grant", "30", check=True).stdout.split()[1]
        ka = etcdctl(eps, "lease", "keep-alive", "--once", lease, check=True).stdout
        assert "keepalived with TTL" in ka
        bad = etcdctl(eps, "get", "wire/", "--rev", "99")
        assert bad.returncode != 0
        assert "required revision is a future revision" in bad.stderr
        log = c.members[0].log_tail(20000)
        want = WIRES[wire or "h2"]
        assert f"({want})" in log, log[-2000:]


def _watch_lines(eps, want: int, deadline_s: float = 15.0) -> list[str]:
    """The first `want` lines `etcdctl watch wire/ --prefix --rev 1` prints
    (it never ends by itself: read them as they come, then kill it)."""
    etcdctl_bin = require_etcd()[1]
    proc = subprocess.Popen([etcdctl_bin, f"--endpoints={','.join(eps)}", "watch", "wire/", "--prefix", "--rev", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "ETCDCTL_API": "3"})
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(got) < want:
            got.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
    except queue.Empty:
        pass
    finally:
        proc.kill()
        proc.wait(10)
    return got
