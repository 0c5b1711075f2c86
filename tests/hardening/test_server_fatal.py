"""Issue 8 item 2, "fatal means exit", on real raftnode processes.

* A member whose raft loop fails (here: its snap directory is replaced by a
  file, so the next snapshot cannot be written -- a disk error) logs why at CRITICAL and
  exits non-zero within seconds, instead of lingering with stale answers.
* SIGTERM ends a member within a few seconds even when its event loop is
  wedged (a test-only fault, RAFTNODE_TEST_FAULT=wedge:<key>, blocks the loop
  when an entry holding <key> is applied).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from engine.wal import layout

from .conftest import start_cluster, wait_for

FAULT_ENV = "RAFTNODE_TEST_FAULT"
EXIT_WITHIN = 5.0


def _put(endpoint: str, key: bytes, timeout: float = 2.0) -> grpc.StatusCode | None:
    """Put through a fresh channel; the error code, or None on success."""
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=timeout)
        return None
    except grpc.RpcError as e:
        return e.code()


def _exit_code(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _start_with_env(root, env: dict[str, str], extra=()):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return start_cluster(root, 1, extra)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_loop_failure_exits_nonzero_with_reason(raftnode_binary, tmp_path):
    c = start_cluster(tmp_path / "c", 1, ("--snapshot-count=20",))
    try:
        m = c.members[0]
        assert _put(m.endpoint, b"before") is None
        # The disk goes bad under the snap directory: the store's open files
        # still work, but the next snapshot file cannot be written (a plain
        # file now stands where the directory was).
        snap = layout.snap_dir(m.data_dir)
        os.rename(snap, str(snap) + ".gone")
        snap.write_bytes(b"")
        failed_at = None
        for i in range(60):
            code = _put(m.endpoint, b"k%d" % i, timeout=1.0)
            if code is not None or not m.running():
                failed_at = time.monotonic()
                break
        assert failed_at is not None, "the snapshot never failed"
        rc = _exit_code(m.proc, EXIT_WITHIN)
        assert rc is not None, f"member still running {EXIT_WITHIN}s after its loop failed:\n{m.log_tail()}"
        assert rc > 0, f"exit status {rc}, expected a non-zero exit (not a signal)"
        log = m.log_path.read_text(errors="replace")
        # The raft loop or the apply task (the store lives under snap/ too).
        assert "CRITICAL" in log and ("raft loop failed" in log or "apply failed" in log), log[-3000:]
        assert "Not a directory" in log, log[-3000:]
    finally:
        c.stop()


def test_sigterm_ends_a_wedged_member(raftnode_binary, tmp_path):
    c = _start_with_env(tmp_path / "c", {FAULT_ENV: "wedge:__wedge_me__"})
    try:
        m = c.members[0]
        # The put wedges the loop: it gets no answer.
        assert _put(m.endpoint, b"__wedge_me__", timeout=1.0) is not None
        wait_for(lambda: "wedging the event loop" in m.log_path.read_text(errors="replace"), 10,
                 "the member to log that its loop is wedged")
        assert c.status(0, timeout=0.5) is None, "a wedged member answered Status"
        t0 = time.monotonic()
        os.kill(m.proc.pid, signal.SIGTERM)
        rc = _exit_code(m.proc, EXIT_WITHIN)
        took = time.monotonic() - t0
        assert rc is not None, f"SIGTERM did not end the wedged member within {EXIT_WITHIN}s"
        assert took < EXIT_WITHIN
    finally:
        c.stop()


def test_sigterm_ends_a_healthy_member_cleanly(raftnode_binary, tmp_path):
    c = start_cluster(tmp_path / "c", 1)
    try:
        m = c.members[0]
        assert _put(m.endpoint, b"k") is None
        os.kill(m.proc.pid, signal.SIGTERM)
        assert _exit_code(m.proc, EXIT_WITHIN) == 0
    finally:
        c.stop()


def test_test_fault_hook_is_off_by_default():
    from engine.server import applying as applying_mod
    os.environ.pop(FAULT_ENV, None)
    assert applying_mod.TestFaultHook.from_env() is None
    with pytest.raises(ValueError):
        applying_mod.TestFaultHook("bogus")
