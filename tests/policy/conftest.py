"""The policy tests reuse the operator tests' fixtures and helpers (operator subprocess, resource
writers, LiteLLM admin client) instead of copying them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_OPERATOR_TESTS = Path(__file__).resolve().parent.parent / "operator"
if str(_OPERATOR_TESTS) not in sys.path:
    sys.path.insert(0, str(_OPERATOR_TESTS))

_spec = importlib.util.spec_from_file_location("operator_test_fixtures", _OPERATOR_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

kube_rw = _fixtures.kube_rw
admin = _fixtures.admin
start_operator = _fixtures.start_operator
ids = _fixtures.ids
