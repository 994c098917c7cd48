"""Fixtures for the chart tests: helm from the kube-clis kit, a renderer, and a NOTES-rendering copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmchart import CHART, REPO, REQUIRED_VALUES, Manifests, Render, deep_merge, run_helm_template


@pytest.fixture(scope="session")
def helm(kube_bin: Path) -> Path:
    return kube_bin / "helm"


@pytest.fixture(scope="session")
def render(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """render(values=None, *, release, namespace, required=True, chart=CHART, extra_args=()) -> Manifests."""
    tmp = tmp_path_factory.mktemp("helm-values")

    def _render(values: dict[str, Any] | None = None, *, release: str = "scim", namespace: str = "identity",
                required: bool = True, chart: Path = CHART, extra_args: tuple[str, ...] = ()) -> Manifests:
        merged = deep_merge(REQUIRED_VALUES if required else {}, values or {})
        out = run_helm_template(helm, chart, merged, release=release, namespace=namespace, tmp=tmp,
                                extra_args=extra_args)
        docs = [d for d in yaml.safe_load_all(out) if d]
        return Manifests(docs=docs, release=release, namespace=namespace)

    return _render


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the chart that also renders its NOTES text into a ConfigMap, because
    `helm template` never renders NOTES.txt and `helm install --dry-run` needs a full cluster."""
    root = tmp_path_factory.mktemp("notes-chart") / CHART.name
    shutil.copytree(CHART, root)
    (root / "templates" / "zz-rendered-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n"
        "  notes: |\n    {{- include \"lso.notes\" . | nindent 4 }}\n"
    )
    yield root


def builder_sources(dockerfile: Path) -> list[str]:
    """The paths the Dockerfile's builder stage COPYs from the build context."""
    builder = dockerfile.read_text().split("\nFROM ")[1]
    sources: list[str] = []
    for line in builder.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            sources.extend(parts[1:-1])
    return sources


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project as the image installs it: the builder stage's files copied into a clean directory
    (no stale build/ from the checkout), the lock files installed hash-checked into a fresh virtualenv
    (binary wheels only), then `pip wheel . --no-deps` there and that wheel without resolving anything.
    Returns the venv's bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    context = root / "context"
    context.mkdir()
    for source in builder_sources(REPO / "Dockerfile"):
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, context / source)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, capture_output=True)
    bin_dir = root / "venv" / "bin"
    pip = [str(bin_dir / "pip"), "install", "-q", "--require-hashes", "--only-binary=:all:"]

    def run(*args: str) -> None:
        proc = subprocess.run(args, cwd=context, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # Binary wheels only, as in the image: its builder stage (python:3.11-slim) has no compiler, so a
    # dependency that would need building from source must fail here too.
    run(*pip, "-r", "requirements-build.lock")
    run(*pip, "-r", "requirements.lock")
    run(str(bin_dir / "pip"), "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"))
    (wheel,) = (root / "dist").glob("litellm_scim_operator-*.whl")
    run(str(bin_dir / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel))
    run(str(bin_dir / "pip"), "check")
    return bin_dir
