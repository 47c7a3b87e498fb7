"""Dependencies point one way: cli -> reports, budgets, lightcl -> costmodel.

Read from the source with ``ast`` (imports inside functions count too), so a
sideways import (reports importing lightcl, say) fails here, not in review.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("costmodel", "lightcl", "budgets", "reports", "cli")
ALLOWED = {
    "costmodel": {"costmodel"},
    "lightcl": {"lightcl", "costmodel"},
    "budgets": {"budgets", "costmodel"},
    "reports": {"reports", "costmodel"},
    "cli": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package])
             for f in files}
    assert {f: w for f, w in wrong.items() if w} == {}


def test_the_check_sees_a_sideways_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from lightcl.validate import Validation\n")
    assert imported_packages(bad) == {"lightcl"}
