"""Theme definitions: Textual's base colours plus raftui's own variables.

Every variable a stylesheet uses must have a default in VARIABLE_DEFAULTS
(Textual refuses to parse a sheet with an unknown variable). Text styles are
variables too, so the monochrome theme can mark the leader with reverse
video where the colour themes use a colour.
"""
from __future__ import annotations

from textual.theme import Theme

VARIABLE_DEFAULTS: dict[str, str] = {
    "leader": "#ffd75f",
    "follower": "#8ab4f8",
    "learner": "#c792ea",
    "candidate": "#ffab40",
    "up": "#4ebf71",
    "down": "#ff5f5f",
    "paused": "#5fafff",
    "unknown": "#8a8a8a",
    "committed": "#e0e0e0",
    "uncommitted": "#ffab40",
    "conf-change": "#c792ea",
    "flash": "#ffd75f",
    "muted": "#8a8a8a",
    "leader-text-style": "bold",
    "down-text-style": "bold",
    "flash-text-style": "bold reverse",
    "uncommitted-text-style": "italic",
}

DARK = Theme(
    name="raftui-dark",
    primary="#5f87d7",
    secondary="#3a5f9f",
    accent="#ffd75f",
    warning="#ffab40",
    error="#ff5f5f",
    success="#4ebf71",
    foreground="#e0e0e0",
    background="#121417",
    surface="#1b1e23",
    panel="#262a31",
    dark=True,
    variables=dict(VARIABLE_DEFAULTS),
)

LIGHT = Theme(
    name="raftui-light",
    primary="#1f5fbf",
    secondary="#5f87d7",
    accent="#a15c00",
    warning="#a15c00",
    error="#c62828",
    success="#1b7f3b",
    foreground="#1c1c1c",
    background="#fafafa",
    surface="#f0f0f0",
    panel="#e2e6ec",
    dark=False,
    variables={
        **VARIABLE_DEFAULTS,
        "leader": "#a15c00",
        "follower": "#1f5fbf",
        "learner": "#7b1fa2",
        "candidate": "#d84315",
        "up": "#1b7f3b",
        "down": "#c62828",
        "paused": "#0277bd",
        "unknown": "#6d6d6d",
        "committed": "#1c1c1c",
        "uncommitted": "#d84315",
        "conf-change": "#7b1fa2",
        "flash": "#a15c00",
        "muted": "#6d6d6d",
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
        "unknown": "#a0a0a0",
        "muted": "#a0a0a0",
        "leader-text-style": "bold reverse",
        "down-text-style": "bold strike",
        "flash-text-style": "bold reverse",
        "uncommitted-text-style": "dim italic",
    },
)

THEMES: dict[str, Theme] = {"dark": DARK, "light": LIGHT, "mono": MONO}
DEFAULT_THEME = "dark"
