"""raftui/source and raftui/host are UI-free: importing them must not load textual."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
UI_FREE = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for package in ("raftui/source", "raftui/host")
    for p in (ROOT / package).glob("*.py")
)


def test_ui_free_modules_do_not_import_textual() -> None:
    """One fresh interpreter imports them one by one and names the first that
    pulls textual in (one process, not one per module: each costs ~0.7 s)."""
    code = ("import sys, importlib\n"
            f"for name in {UI_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
            "    assert not bad, (name, bad[:3])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(UI_FREE) >= 10


def test_tcss_uses_theme_variables_only() -> None:
    import re

    for sheet in (ROOT / "themes").glob("*.tcss"):
        text = sheet.read_text()
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b", text), f"raw colour in {sheet.name}"
        assert not re.search(r"\brgba?\(", text), f"raw colour in {sheet.name}"
