"""Layers point down: no module imports a package of a layer above its own.

The order is README's layout table, lowest first. Imports are read with `ast`
from the source (every `import` and `from ... import`, at module level or
inside a function, relative ones resolved), so a lazy import inside a
function counts as much as one at the top. Nothing is imported, so this runs
in a fraction of a second.

raftui's own data-layer rule (raftui/source and raftui/host load no textual)
is checked by tests/console/test_layers.py.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A package may import the packages listed before it, never
# those after it. `engine` is the package's own top (engine/__main__.py).
ORDER = (
    "engine.proto",
    "engine.raft",
    "engine.sim",        # a side branch: a whole cluster of raft cores in one process
    "engine.wal",
    "engine.auth",       # etcd's auth store; the MVCC backend keeps its tables
    "engine.mvcc",
    "engine.transport",
    "engine.server",
    "engine.api",
    "engine.http",       # /health, /metrics, the JSON gateway: beside the gRPC API
    "engine.cli",
    "engine",
    "raftui.source",
    "raftui.host",
    "raftui",
)
RANK = {name: i for i, name in enumerate(ORDER)}
# engine/sim is a harness for the raft core; no member code depends on it.
NOT_IMPORTED_BY_ENGINE = {"engine.sim"}
# raftui's data layer is below every screen and widget of the console.
RAFTUI_DATA = {"raftui.source", "raftui.host"}

# Upward edges being removed this session, each with the reason it still
# stands. (module path, imported layer)
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()

# Pure modules of a higher layer that a lower one may import, each with its
# reason. (importing layer, module)
# - engine/server/ready_steps.py: the order of one Ready's steps, run by the
#   node's Ready loop and by the simulator, so the simulator checks the
#   node's own ordering (issue 9). It imports only engine.proto and
#   engine.raft (tests/raft/test_ready_steps.py checks it).
ALLOWED_UPWARD_MODULES: set[tuple[str, str]] = {("engine.sim", "engine.server.ready_steps")}


def layer_of(module: str) -> str | None:
    """The ORDER entry a dotted module name belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] not in ("engine", "raftui"):
        return None
    if len(parts) > 1 and ".".join(parts[:2]) in RANK:
        return ".".join(parts[:2])
    return parts[0]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, anywhere in it, as absolute dotted names."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(text: str, name: str, is_package: bool) -> set[str]:
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text, name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from engine import cli` imports engine.cli
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[pathlib.Path]:
    return sorted(p for top in ("engine", "raftui") for p in (ROOT / top).rglob("*.py"))


def import_edges() -> list[tuple[str, str, str]]:
    """(file, its layer, imported layer) for every import between two layers."""
    edges = []
    for path in sources():
        own = layer_of(module_name(path))
        modules = imported_modules(path)
        allowed = {m for lay, m in ALLOWED_UPWARD_MODULES if lay == own and m in modules}
        for module in modules:
            # `from engine.server import ready_steps` also names its package.
            if module in allowed or any(m.startswith(module + ".") for m in allowed):
                continue
            other = layer_of(module)
            if other is not None and other != own:
                edges.append((path.relative_to(ROOT).as_posix(), own, other))
    return edges


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in ORDER (and README's layout table)."""
    for top in ("engine", "raftui"):
        for d in sorted((ROOT / top).iterdir()):
            if d.is_dir() and any(d.glob("*.py")):
                name = f"{top}.{d.name}"
                if top == "raftui" and name not in RANK:
                    continue    # screens, widgets: the console itself, one layer
                assert name in RANK, f"{name} has no place in tests/test_layering.py ORDER"


def test_no_module_imports_a_layer_above_it() -> None:
    upward = [(f, own, other) for f, own, other in import_edges()
              if RANK[other] > RANK[own] and (f, other) not in KNOWN_EXCEPTIONS]
    assert not upward, "\n".join(f"{f} ({own}) imports {other}, a layer above it"
                                 for f, own, other in upward)


def test_engine_member_code_never_imports_the_simulator() -> None:
    bad = [(f, other) for f, own, other in import_edges()
           if other in NOT_IMPORTED_BY_ENGINE and own.startswith("engine")]
    assert not bad, bad


def test_raftui_data_layer_imports_no_screen_or_widget() -> None:
    bad = [(f, other) for f, own, other in import_edges()
           if own in RAFTUI_DATA and other == "raftui"]
    assert not bad, bad


def test_the_engine_never_imports_the_console_or_textual() -> None:
    for path in (ROOT / "engine").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top not in ("raftui", "textual", "rich"), f"{path} imports {module}"


def test_the_checker_sees_lazy_and_relative_imports() -> None:
    """The parser itself: an import inside a function and a relative import count."""
    code = ("from . import sibling\n"
            "from ..mvcc import kvstore\n"
            "def later():\n"
            "    import engine.cli.main\n")
    found = imports_in(code, "engine.server.probe", is_package=False)
    assert {"engine.server.sibling", "engine.mvcc.kvstore", "engine.cli.main"} <= found
    assert layer_of("engine.cli.main") == "engine.cli"
    assert layer_of("engine") == "engine"


# The Node's insides that a handler (gRPC in engine/api, HTTP in engine/http)
# must reach only through KVServer (engine/server/kvserver.py), the one seam.
NODE_INSIDES = {"applier", "rn", "raftlog", "membership", "transport", "cfg", "_node"}


def test_the_api_reaches_the_member_only_through_kvserver() -> None:
    bad = []
    for path in sorted(p for pkg in ("api", "http") for p in (ROOT / "engine" / pkg).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in NODE_INSIDES:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
        for module in imported_modules(path):
            if module == "engine.server.node" or module.startswith("engine.server.node."):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)
