"""Imports run downward only (docs/architecture.md): the contract and the common layer at the bottom,
the endpoint and the operator beside each other above them, the command line on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A package may import its own modules and any package of a lower layer, never one of its own
# layer (the endpoint and the operator meet only in the contract) or above.
LAYERS = {
    "scim_contract": 0,
    "scim_common": 1,
    "scim_endpoint": 2,
    "scim_operator": 2,
    "litellm_scim": 3,
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a project package in a module, wherever it is."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in LAYERS]
    return found


def upward_imports(package: str) -> list[str]:
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, imported in project_imports(path):
            if imported != package and LAYERS[imported] >= LAYERS[package]:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    return problems


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_run_downward(package: str) -> None:
    assert upward_imports(package) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom scim_operator import keys\n\ndef f():\n    import litellm_scim.cli\n")
    assert project_imports(module) == [(2, "scim_operator"), (5, "litellm_scim")]
