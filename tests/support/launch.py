"""Children that die with the test run: engine.cli.launch.with_parent_death_signal
(why a tiny exec launcher rather than a preexec_fn is told there)."""
from __future__ import annotations

from engine.cli.launch import with_parent_death_signal

__all__ = ["with_parent_death_signal"]
