"""The four SCIM conformance suites against a real endpoint process on the real API server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from operator_helpers import start_endpoint, stop_endpoint

from litellm_scim import peers

KNOWN_FAILURES = Path(__file__).resolve().parent.parent / "conformance" / "known-failures"
REQUIRED = 310


def test_known_failures_each_give_a_reason() -> None:
    for line in KNOWN_FAILURES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            check, _, reason = line.partition("#")
            assert "::" in check and len(reason.strip()) > 10, line


@pytest.mark.slow
def test_conformance_suites_pass(endpoint_kubeconfig: str, namespace: str, token: str, tmp_path: Path) -> None:
    runner = peers.shared_dir() / "conformance" / "run"
    if not runner.exists():
        pytest.skip(f"no conformance kit at {runner}")
    endpoint = start_endpoint(endpoint_kubeconfig, namespace, tmp_path / "endpoint.log")
    try:
        done = subprocess.run(
            [str(runner), f"{endpoint.url}/scim/v2", token, str(tmp_path / "report")],
            env={**os.environ, "KNOWN_FAILURES": str(KNOWN_FAILURES)}, capture_output=True, text=True,
            timeout=1200,
        )
    finally:
        stop_endpoint(endpoint)
    output = done.stdout + done.stderr
    closing = re.search(r"conformance: (\d+) passed, (\d+) failed, (\d+) skipped", output)
    assert closing is not None, output[-3000:]
    assert done.returncode == 0, output[-3000:]
    assert int(closing.group(1)) >= REQUIRED, output[-3000:]
