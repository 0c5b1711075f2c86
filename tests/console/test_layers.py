"""raftui/source and raftui/host are UI-free: importing them must not load textual."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
UI_FREE = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for package in ("raftui/source", "raftui/host")
    for p in (ROOT / package).glob("*.py")
)


@pytest.mark.parametrize("module", UI_FREE)
def test_module_does_not_import_textual(module: str) -> None:
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_tcss_uses_theme_variables_only() -> None:
    import re

    for sheet in (ROOT / "themes").glob("*.tcss"):
        text = sheet.read_text()
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b", text), f"raw colour in {sheet.name}"
        assert not re.search(r"\brgba?\(", text), f"raw colour in {sheet.name}"
