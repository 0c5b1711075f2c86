"""raftnode's process-wide guards for a flood of connections (review of the
peer port): the open-file soft limit is raised, and asyncio's traceback per
failed accept() (descriptors exhausted) becomes one line every few seconds."""
from __future__ import annotations

import asyncio
import logging
import resource

from engine.cli import main


def test_failed_accepts_are_reported_once_in_a_while(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    handler = main._QuietAcceptErrors()
    loop = asyncio.new_event_loop()
    try:
        for _ in range(5000):
            handler(loop, {"message": "socket.accept() out of system resource",
                           "exception": OSError(24, "Too many open files")})
        handler(loop, {"message": "an unrelated loop error"})
    finally:
        loop.close()
    floods = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(floods) == 1
    # Everything else still goes to asyncio's default handler.
    assert any(r.getMessage() == "an unrelated loop error" for r in caplog.records)


def test_the_open_file_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        main._raise_open_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
