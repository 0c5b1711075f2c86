"""The user's keymap: `~/.config/raftui/keymap.toml` (or $XDG_CONFIG_HOME/raftui/,
or `raftui --keymap FILE`), applied at start. One line per binding to move,
its id (the last column of `?`) and the key or keys, as Textual names them:

    # ~/.config/raftui/keymap.toml
    write = "ctrl+w"          # w -> ctrl+w
    kill = "K"                # k -> K (shift+k)
    filter = "slash,f3"       # two keys for one command
    cycle_theme = "f2"

A file that cannot be read, an id that no binding has or a value that is not
a string is reported (the console still starts, with the other lines applied).
"""
from __future__ import annotations

import os
import pathlib
import tomllib


def default_path() -> pathlib.Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return pathlib.Path(base) / "raftui" / "keymap.toml"


def load(path: os.PathLike | str | None, known_ids: set[str]) -> tuple[dict[str, str], list[str]]:
    """(binding id -> keys, problems). A missing default file is no problem."""
    explicit = path is not None
    file = pathlib.Path(path) if explicit else default_path()
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        return {}, [f"keymap {file}: no such file"] if explicit else []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"keymap {file}: {exc}"]
    keymap, problems = {}, []
    for binding_id, keys in data.items():
        if binding_id not in known_ids:
            problems.append(f"keymap {file}: no binding has the id {binding_id!r} (? lists the ids)")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"keymap {file}: {binding_id} must be a key name in quotes, like \"ctrl+w\"")
        else:
            keymap[binding_id] = ",".join(k.strip() for k in keys.split(",") if k.strip())
    return keymap, problems
