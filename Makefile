# The two commands of the README: `make dev` runs the system, `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev test lint unit conformance bench image

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

install: $(BIN)/.installed

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
