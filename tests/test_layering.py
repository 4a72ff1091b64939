"""Imports point down only (ARCHITECTURE.md): workloads <- hwmodels <- sim <- planners <- xpusim.

Reads every module's imports with ``ast`` (including imports inside functions) and fails on any
import of a higher layer, and on ``print(`` calls in the library layers (the library never prints).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "workloads": {"workloads"},
    "hwmodels": {"workloads", "hwmodels"},
    "sim": {"workloads", "hwmodels", "sim"},
    "planners": {"workloads", "hwmodels", "sim", "planners"},
    "xpusim": {"workloads", "hwmodels", "sim", "planners", "xpusim"},
}


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_imports_point_down(pkg: str) -> None:
    bad = []
    for path in _modules(pkg):
        for top in _imported_top_levels(path) - ALLOWED[pkg]:
            bad.append(f"{path.relative_to(ROOT)} imports {top}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", ["workloads", "hwmodels", "sim", "planners"])
def test_library_never_prints(pkg: str) -> None:
    bad = []
    for path in _modules(pkg):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "print() in library code:\n" + "\n".join(bad)


def test_layering_check_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself can fail: a module importing upward is detected."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from sim.x import y\n")
    assert _imported_top_levels(f) == {"sim"}
