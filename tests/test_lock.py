"""The lock files agree with pyproject.toml, so nobody changes a pin without re-locking (`make lock`).

requirements.lock (what the image installs), requirements-dev.lock (what `make install` and CI
install) and requirements-build.lock (pip and the build backend) pin every package, transitive ones
included, with the hashes of its files; both the Dockerfile and the Makefile install with
``--require-hashes``."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = {"runtime": "requirements.lock", "dev": "requirements-dev.lock", "build": "requirements-build.lock"}


class Locked:
    """One entry of a lock file: ``name==version [; marker]`` with its ``--hash`` options."""

    def __init__(self, text: str) -> None:
        spec, *options = re.split(r"\s+--", text.replace("\\\n", " ").strip())
        self.requirement = Requirement(spec.strip())
        self.hashes = [o.split("=", 1)[1] for o in options if o.startswith("hash=")]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str:
        specifiers = list(self.requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not pinned: {self.requirement}"
        return specifiers[0].version


def read_lock(name: str) -> dict[str, Locked]:
    text = (REPO / name).read_text()
    # Entries start at column 0; their continuation lines (hashes) and "# via" comments are indented.
    entries = re.findall(r"^[A-Za-z0-9].*?(?=^[A-Za-z0-9#]|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    locked = [Locked(re.sub(r"^\s*#.*$", "", e, flags=re.MULTILINE)) for e in entries]
    return {entry.name: entry for entry in locked}


def pins(requirements: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in requirements:
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject.toml pins exactly: {line}"
        out[canonicalize_name(req.name)] = spec.version
    return out


RUNTIME_PINS = pins(PYPROJECT["project"]["dependencies"])
EXTRA_PINS = {**pins(PYPROJECT["project"]["optional-dependencies"]["dev"]),
              **pins(PYPROJECT["project"]["optional-dependencies"]["bench"])}


@pytest.mark.parametrize("lock", sorted(LOCKS.values()))
def test_every_entry_is_pinned_with_sha256_hashes(lock: str) -> None:
    entries = read_lock(lock)
    assert entries, f"{lock} is empty"
    for entry in entries.values():
        assert entry.version
        assert entry.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in entry.hashes), entry.name


@pytest.mark.parametrize("lock, wanted", [("requirements.lock", RUNTIME_PINS),
                                          ("requirements-dev.lock", {**RUNTIME_PINS, **EXTRA_PINS})])
def test_lock_holds_exactly_the_versions_pyproject_pins(lock: str, wanted: dict[str, str]) -> None:
    entries = read_lock(lock)
    disagree = {name: (version, entries[name].version if name in entries else None)
                for name, version in wanted.items() if name not in entries or entries[name].version != version}
    assert not disagree, f"pyproject.toml pin vs {lock} (run `make lock`): {disagree}"


def test_runtime_lock_holds_nothing_only_dev_needs() -> None:
    runtime = read_lock("requirements.lock")
    assert not set(EXTRA_PINS) & set(runtime), "a dev or bench dependency in the image's lock"


def test_dev_lock_tests_what_the_image_ships() -> None:
    """Every package of the image at the same version in the environment the tests run in."""
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    differ = {n: (e.version, dev[n].version if n in dev else None) for n, e in runtime.items()
              if n not in dev or dev[n].version != e.version}
    assert not differ, f"requirements.lock vs requirements-dev.lock (run `make lock`): {differ}"


def test_build_lock_satisfies_the_build_system() -> None:
    build = read_lock("requirements-build.lock")
    for line in PYPROJECT["build-system"]["requires"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in build and req.specifier.contains(Version(build[name].version)), line
    assert "pip" in build


@pytest.mark.parametrize("lock, roots", [
    ("requirements.lock", ["litellm-scim-operator"]),
    ("requirements-dev.lock", ["litellm-scim-operator[dev,bench]"]),
])
def test_lock_is_closed_under_dependencies(lock: str, roots: list[str]) -> None:
    """Everything the locked packages require (by their metadata, as installed here, for Linux and
    Python 3.11 as the image runs) is locked too; `pip install --require-hashes` would refuse it otherwise."""
    entries = read_lock(lock)
    environment = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "python_version": "3.11", "platform_python_implementation": "CPython",
                   "implementation_name": "cpython"}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r).name, frozenset(Requirement(r).extras)) for r in roots]
    missing: dict[str, str] = {}
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing to read its requirements from
        own = canonicalize_name(name)
        if own in entries and dist.version != entries[own].version:
            continue  # installed at another version than locked: its metadata says nothing about the lock
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                    req.marker.evaluate({**environment, "extra": e}) for e in {"", *extras}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in entries and dep != "litellm-scim-operator":
                missing[dep] = name
            todo.append((req.name, frozenset(req.extras)))
    assert not missing, f"required but not in {lock} (run `make lock`): {missing}"
