"""Simulation mode: `raftui sim --seed S --nodes N` shows one schedule of the
deterministic simulator (engine/sim) in the console's own panels, event by
event. recording.py (no UI) runs the schedule and keeps frames; ui.py is the
app that steps through them; cli.py the command line."""
