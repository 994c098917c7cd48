"""Imports run downward only (docs/architecture.md): the contract and the common layer at the bottom,
the endpoint and the operator beside each other above them, the command line on top; inside the
endpoint, from the process and HTTP down to the watch-backed copies."""

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


# Inside the endpoint (docs/architecture.md, "scim_endpoint"): a module may import modules of its own
# layer or below, never one above. Every module has a layer, so a new one must be placed here.
ENDPOINT_LAYERS = {
    "server": 6,  # the process
    "app": 5,  # HTTP
    "service": 4,  # SCIM operations
    "metrics": 4,
    "audit": 4,  # the audit trail: log lines and Events of SCIM writes
    "resources": 3,  # the resource types
    "convert": 2,  # pure protocol: no I/O
    "patch": 2,
    "filters": 2,
    "schema": 2,
    "store": 1,  # Kubernetes state
    "auth": 1,
    "kubeapi": 1,
    "informer": 0,  # watch-backed copies, errors
    "errors": 0,
    "limits": 0,  # caps on one request's cost (pure)
}


def package_imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a module of ``package`` in a module, wherever it is:
    ``import package.m``, ``from package.m import x``, ``from package import m``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == package:
            names = [f"{package}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names if name.startswith(f"{package}.")]
    return found


def upward_module_imports(directory: Path, layers: dict[str, int]) -> list[str]:
    problems = []
    for path in sorted(directory.glob("*.py")):
        if path.stem == "__init__":
            continue
        if path.stem not in layers:
            problems.append(f"{path.name} has no layer")
            continue
        for line, imported in package_imports(path, directory.name):
            if layers.get(imported, max(layers.values()) + 1) > layers[path.stem]:
                problems.append(f"{path.name}:{line} imports {imported}, a higher layer")
    return problems


def test_endpoint_modules_import_downward() -> None:
    assert upward_module_imports(REPO / "scim_endpoint", ENDPOINT_LAYERS) == []


# Inside the operator (docs/architecture.md, "scim_operator"): registrations on top, reconcilers that
# call only downward, the clients of LiteLLM and Kubernetes below them, pure rules at the bottom.
OPERATOR_LAYERS = {
    "main": 7,  # the process
    "handlers": 6,  # every Kopf registration, nothing else
    "users": 5,  # reconcilers that start from one resource
    "groups": 5,
    "policy_sync": 5,
    "user_policy_sync": 5,
    "membership": 4,  # a group's members, and its status from what was applied
    "group_keys": 4,
    "keys": 3,  # the keys of one group
    "context": 2,  # what every reconciler is handed
    "state": 1,  # in-memory knowledge and the view over Kopf's indexes
    "litellm_api": 1,  # clients
    "resources": 1,
    "secrets_api": 1,
    "bookkeeping": 1,
    "policies": 0,  # pure rules and formats, metrics
    "user_policies": 0,
    "objects": 0,
    "identity": 0,
    "key_secrets": 0,
    "priority": 0,
    "user_reads": 0,
    "team_reads": 0,
    "drift_sweep": 0,
    "kopf_patches": 0,
    "metrics": 0,
}


def test_operator_modules_import_downward() -> None:
    assert upward_module_imports(REPO / "scim_operator", OPERATOR_LAYERS) == []


def test_the_check_sees_an_upward_module_import(tmp_path: Path) -> None:
    package = tmp_path / "scim_endpoint"
    package.mkdir()
    (package / "store.py").write_text("from scim_endpoint import errors, schema\nimport scim_endpoint.informer\n\n"
                                      "def f():\n    from scim_endpoint.service import Service\n")
    (package / "extra.py").write_text("")
    assert package_imports(package / "store.py", "scim_endpoint") == [
        (1, "errors"), (1, "schema"), (2, "informer"), (5, "service")]
    assert upward_module_imports(package, ENDPOINT_LAYERS) == [
        "extra.py has no layer", "store.py:1 imports schema, a higher layer",
        "store.py:5 imports service, a higher layer"]
