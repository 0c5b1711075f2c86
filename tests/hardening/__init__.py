"""Hardening tests (issue 8): hostile input, crash cycles, and one test per fixed item."""
