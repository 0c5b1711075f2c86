"""The console's themes (Textual Theme definitions) and stylesheets (*.tcss).

Colours live only in the Theme definitions here; the stylesheets use theme
variables ($leader, $down, $committed, ...) and never a raw colour, so a new
theme is one more `Theme(...)` and nothing else.
"""
from __future__ import annotations

import pathlib

from .definitions import DEFAULT_THEME, THEMES, VARIABLE_DEFAULTS

HERE = pathlib.Path(__file__).resolve().parent

# Order matters only for readability: app layout first, then one sheet per panel.
STYLESHEETS = [
    HERE / "app.tcss",
    HERE / "cluster.tcss",
    HERE / "timeline.tcss",
    HERE / "wal.tcss",
    HERE / "keys.tcss",
    HERE / "watchers.tcss",
    HERE / "rates.tcss",
    HERE / "dialogs.tcss",
    HERE / "links.tcss",
    HERE / "scrub.tcss",
    HERE / "txn.tcss",
    HERE / "recovery.tcss",
]

__all__ = ["DEFAULT_THEME", "THEMES", "VARIABLE_DEFAULTS", "STYLESHEETS"]
