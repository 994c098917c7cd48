"""The policy tests reuse the operator tests' fixtures and helpers (operator subprocess, resource
writers, LiteLLM admin client) instead of copying them: tests/conftest.py loads
tests/operator/operator_fixtures.py as a plugin and puts tests/operator on the import path."""
