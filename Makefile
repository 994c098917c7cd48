# The two commands of the README: `make dev` runs the system, `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON_LOCK := --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock"

.PHONY: install dev test lint unit conformance bench image lock

# Everything from the lock files, each download checked against its hash: first pip and the build
# backend (requirements-build.lock; older pips mishandle extras in hash-checking mode), then every
# dependency; then the project itself, built with the locked setuptools (build isolation would fetch
# setuptools unchecked).
$(BIN)/.installed: pyproject.toml requirements-dev.lock requirements-build.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements-build.lock
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/.installed

# Re-resolve the lock files after a change of the pins in pyproject.toml (tests/test_lock.py fails
# until they agree): uv (a dev dependency) resolves against PyPI, for every platform, and records the
# hash of every file of every version it picks.
lock: install
	$(BIN)/uv pip compile pyproject.toml $(PYTHON_LOCK) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench $(PYTHON_LOCK) -o requirements-dev.lock
	$(BIN)/python -c 'import tomllib; print("pip", *tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(BIN)/uv pip compile - $(PYTHON_LOCK) -o requirements-build.lock

dev: install
	$(BIN)/litellm-scim dev $(DEV_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Lint, type-check, then every test against real peers (started by the fixtures when none is configured).
test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.endpoint_load

# The container image from the Dockerfile (docker, else buildah); IMAGE=name:tag to choose the tag.
image:
	scripts/image $(IMAGE)
