"""Scenario scripts: a TOML list of steps (faults, process control, writes,
waits, asserts) run against a hosted or attached cluster, headless
(`raftui run FILE`) or from the console (`:run FILE`, raftui/scenario/ui.py).

script.py parses and checks a file, cluster.py acts on the cluster through
raftui/source and raftui/host, runner.py runs the steps and reports. None of
them imports textual; ui.py is the console's panel for a running scenario.
"""
from .script import STEP_HELP, Loop, Script, ScriptError, Step, load, parse
from .runner import Report, Runner, StepEvent
from .cluster import ScenarioCluster
from . import library


def resolve(name_or_path: str) -> Script:
    """A shipped scenario by name (leader-isolation), else a file path. ScriptError if neither."""
    import os

    if not os.path.exists(name_or_path) and not name_or_path.endswith(".toml"):
        text = library.text(name_or_path)
        if text is None:
            raise ScriptError(f"{name_or_path}: no such file, and no shipped scenario of that name "
                              f"(shipped: {', '.join(library.names())})")
        return parse(text, name_or_path)
    return load(name_or_path)


__all__ = ["STEP_HELP", "Loop", "Script", "ScriptError", "Step", "load", "parse", "resolve", "Report",
           "Runner", "StepEvent", "ScenarioCluster", "library"]
