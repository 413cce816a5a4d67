"""The package is a one-way stack of layers with no import circle (issue 14).

Each top-level package of ``atlas`` has a rank; a module may import its own package and packages of a
lower rank, never a higher or equal one. Every import counts, also those inside functions (atlas
imports heavy libraries lazily, and a lazy import from a higher layer is still an upward dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "atlas"

#: Bottom to top. Packages on one rank may not import each other.
LAYERS = [
    ["core"],
    ["_kernels", "catalogue"],
    ["ingest"],
    ["simulate", "score"],
    ["integrate"],
    ["analyse"],
    ["report"],
    ["query"],
    ["pipeline"],
    ["cli"],
]
RANK = {pkg: rank for rank, pkgs in enumerate(LAYERS) for pkg in pkgs}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The atlas modules ``name`` imports (a ``from pkg import sub`` of a submodule counts as ``pkg.sub``)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "atlas"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "atlas":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {_package(m) for m in MODULES} - {None}
    assert packages <= set(RANK), f"give these packages a layer in tests/test_layers.py: {packages - set(RANK)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module):
    own = _package(module)
    if own is None:  # atlas/__init__.py: may only use the bottom layer
        bad = {t for t in GRAPH[module] if _package(t) not in (None, "core")}
    else:
        bad = {t for t in GRAPH[module] if _package(t) not in (None, own) and RANK[_package(t)] >= RANK[own]}
    assert not bad, f"{module} imports from the same or a higher layer: {sorted(bad)}"


def test_no_import_circle():
    # Depth-first search over the module graph (submodule -> its package's __init__ edges included).
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in MODULES:
                continue
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(cycle))
