"""Linearizability, live: the WGL checker (checker.py, moved here from tests/support),
a read/write/cas workload (workload.py), the live session that checks its history
in windows off the UI loop (live.py), saved histories (history.py) and their
replay (`raftui lincheck FILE`, replay.py). ui.py is the console's panel;
nothing else here imports textual."""
