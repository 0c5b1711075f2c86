"""Theme definitions: Textual's base colours plus raftui's own variables.

Every variable a stylesheet uses must have a default in VARIABLE_DEFAULTS
(Textual refuses to parse a sheet with an unknown variable). Text styles are
variables too, so the monochrome theme can mark the leader with reverse
video where the colour themes use a colour.

Readable in every theme: every role, health and text colour has a contrast
of at least 4.5:1 (WCAG AA) against every background it is drawn on --
the surface, the panel (title bars), and the selected row. The selected row
is a quiet background plus bold, not a saturated block that the role
colours of its cells would vanish into (tests/console/test_contrast.py
computes every pair from these definitions).
"""
from __future__ import annotations

from textual.theme import Theme

VARIABLE_DEFAULTS: dict[str, str] = {
    "leader": "#ffd75f",
    "follower": "#8ab4f8",
    "learner": "#c792ea",
    "candidate": "#ffab40",
    "up": "#4ebf71",
    "down": "#ff7b7b",
    "paused": "#5fafff",
    "unknown": "#a0a0a0",
    "committed": "#e0e0e0",
    "uncommitted": "#ffab40",
    "conf-change": "#c792ea",
    "flash": "#ffd75f",
    "muted": "#a0a0a0",
    "leader-text-style": "bold",
    "down-text-style": "bold",
    "flash-text-style": "bold reverse",
    "uncommitted-text-style": "italic",
}


def _selection(background: str, foreground: str) -> dict[str, str]:
    """The selected row (a DataTable's cursor), focused or not: Textual's block-cursor variables."""
    return {
        "block-cursor-background": background,
        "block-cursor-foreground": foreground,
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-background": background,
        "block-cursor-blurred-foreground": foreground,
        "block-cursor-blurred-text-style": "none",
    }

DARK = Theme(
    name="raftui-dark",
    primary="#5f87d7",
    secondary="#3a5f9f",
    accent="#ffd75f",
    warning="#ffab40",
    error="#ff7b7b",
    success="#4ebf71",
    foreground="#e0e0e0",
    background="#121417",
    surface="#1b1e23",
    panel="#262a31",
    dark=True,
    variables={**VARIABLE_DEFAULTS, **_selection("#2a3548", "#e0e0e0")},
)

LIGHT = Theme(
    name="raftui-light",
    primary="#1f5fbf",
    secondary="#5f87d7",
    accent="#8a4f00",
    warning="#8a4f00",
    error="#b71c1c",
    success="#176a31",
    foreground="#1c1c1c",
    background="#fafafa",
    surface="#f0f0f0",
    panel="#e2e6ec",
    dark=False,
    variables={
        **VARIABLE_DEFAULTS,
        "leader": "#8a4f00",
        "follower": "#1f5fbf",
        "learner": "#7b1fa2",
        "candidate": "#b03a10",
        "up": "#176a31",
        "down": "#b71c1c",
        "paused": "#01609a",
        "unknown": "#595959",
        "committed": "#1c1c1c",
        "uncommitted": "#b03a10",
        "conf-change": "#7b1fa2",
        "flash": "#8a4f00",
        "muted": "#595959",
        **_selection("#d6e4f5", "#1c1c1c"),
    },
)

# High contrast, no hue: meaning is carried by text style (and the glyphs the
# panels always print), so it also reads on a monochrome terminal.
MONO = Theme(
    name="raftui-mono",
    primary="#ffffff",
    secondary="#c0c0c0",
    accent="#ffffff",
    warning="#ffffff",
    error="#ffffff",
    success="#ffffff",
    foreground="#ffffff",
    background="#000000",
    surface="#000000",
    panel="#303030",
    dark=True,
    variables={
        **{name: "#ffffff" for name in ("leader", "follower", "learner", "candidate", "up", "down",
                                        "paused", "committed", "uncommitted", "conf-change", "flash")},
        "unknown": "#b0b0b0",
        "muted": "#b0b0b0",
        **_selection("#3a3a3a", "#ffffff"),
        "leader-text-style": "bold reverse",
        "down-text-style": "bold strike",
        "flash-text-style": "bold reverse",
        "uncommitted-text-style": "dim italic",
    },
)

THEMES: dict[str, Theme] = {"dark": DARK, "light": LIGHT, "mono": MONO}
DEFAULT_THEME = "dark"
