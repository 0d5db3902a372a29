"""The architecture, enforced: a walk of every import in src/minifw (module level and the lazy
ones inside functions alike) checks the layering, the pure core and that no cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = SRC / "minifw"

# Each package's rank: a module may import only from its own package or a lower rank.
RANKS = {
    "errors": 0,
    "model": 1, "netlink": 1, "bpf": 1,
    "hooks": 2,
    "compile": 3,
    "engine": 4,
    "kernel": 5, "store": 5, "control": 5, "events": 5,
    "runners": 6,
    "app": 7,
    "api": 8,
    "daemon": 9,
    "cli": 10,
    "lab": 11,
}
PURE = ("model", "netlink", "bpf", "compile", "engine")
# The hook decorator (minifw.hooks itself, not its loader or runner parts) is pure as well:
# compile plans chains from its HookSpec.
PURE_MODULES = {"minifw.hooks", "minifw.hooks.addresses", "minifw.hooks.packet"}
# The standard library's doors to the outside world: none may open in the pure core (nor their
# C cores, which the ban path imports directly for its start-up).
IO_MODULES = {"os", "socket", "ctypes", "subprocess", "sqlite3", "fcntl", "select", "signal",
              "shutil", "tempfile", "pathlib", "io", "mmap", "multiprocessing", "threading",
              "asyncio", "runpy", "nftables", "logging", "time",
              "_socket", "_sqlite3", "_ctypes", "_thread", "posix"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from . import x` names submodules as well as attributes
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_top_level_holds_only_the_facade_the_errors_the_api_and_packages():
    loose = {p.name for p in ROOT.glob("*.py")}
    assert loose <= {"__init__.py", "errors.py", "api.py"}, loose
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANKS) - {"errors", "api"}, packages


def test_nothing_imports_upward():
    upward = []
    for module, targets in graph().items():
        here = top(module)
        if here == "":  # minifw/__init__: the lazy facade over the API
            continue
        for target in targets:
            there = top(target)
            if there == "":
                upward.append(f"{module} -> {target} (the facade)")
            elif there != here and RANKS[there] > RANKS[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_the_pure_core_imports_no_io():
    found = []
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        if top(module) not in PURE and module not in PURE_MODULES:
            continue
        for target in imports_of(path):
            if target.split(".")[0] in IO_MODULES:
                found.append(f"{module} -> {target}")
            if target.startswith("minifw.") and top(target) not in PURE + ("errors",):
                # `from ..hooks import HookSpec` names an attribute of a pure module
                owner = target if target in modules else target.rpartition(".")[0]
                if owner not in PURE_MODULES:
                    found.append(f"{module} -> {target}")
    assert not found, "\n".join(sorted(found))


def test_no_import_cycle():
    edges = graph()
    # a package's __init__ that re-exports its own submodules is no cycle of the architecture
    for module in edges:
        edges[module] = {t for t in edges[module] if not t.startswith(module + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_walk_sees_relative_and_lazy_imports(tmp_path):
    """The checks above are only as good as the walk: a lazy relative import two levels up
    must be found."""
    pkg = tmp_path / "minifw" / "app"
    pkg.mkdir(parents=True)
    src = pkg / "x.py"
    src.write_text("def f():\n    from ..kernel import table\n    from . import y\n")
    global SRC
    saved = SRC
    SRC = tmp_path
    try:
        found = imports_of(src)
    finally:
        SRC = saved
    assert {"minifw.kernel", "minifw.kernel.table", "minifw.app.y"} <= found
