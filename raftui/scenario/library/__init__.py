"""The scenarios shipped with raftui (package data): `raftui run leader-isolation`."""
from __future__ import annotations

import importlib.resources


def names() -> list[str]:
    """Every shipped scenario, by the name `raftui run NAME` takes (the file name without .toml)."""
    return sorted(p.name[:-5] for p in importlib.resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def text(name: str) -> str | None:
    """A shipped scenario's TOML text, None if there is no such one."""
    if name not in names():
        return None
    return importlib.resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
