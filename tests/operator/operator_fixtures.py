"""Fixtures of the operator tests: the operator subprocess, resource writers, a LiteLLM admin client.

Loaded as a plugin from tests/conftest.py (not a conftest of its own: the endpoint tests import
their conftest by module name, which a second tests/*/conftest.py would shadow)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from operator_helpers import Admin, Kube, OperatorProcess, start_endpoint, stop_endpoint
from product_access import ChartAccess

from litellm_scim import peers
from scim_common import tokens

SCIM = "application/scim+json"


@pytest.fixture
def kube_rw(kube_api: client.ApiClient, namespace: str) -> Kube:
    return Kube(kube_api, namespace)


@pytest.fixture
async def admin(litellm: peers.LiteLLM) -> AsyncIterator[Admin]:
    api = Admin(litellm.url, litellm.master_key)
    yield api
    await api.close()


@pytest.fixture
def start_operator(
    namespace: str, chart_access: ChartAccess, litellm: peers.LiteLLM, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start ``litellm-scim operator`` for the test's namespace, as the chart's operator
    ServiceAccount; every one is stopped afterwards. Keyword arguments become flags
    (``drift_policy="report"`` -> ``--drift-policy report``)."""
    started: list[OperatorProcess] = []

    def start(litellm_url: str | None = None, **flags: str) -> OperatorProcess:
        extra = {k.replace("_", "-"): v for k, v in flags.items()}
        proc = OperatorProcess(
            namespace=namespace, kubeconfig=chart_access.operator_kubeconfig, litellm_url=litellm_url or litellm.url,
            master_key=litellm.master_key, log_path=tmp_path / f"operator-{len(started)}.log", extra=extra,
        )
        started.append(proc)
        return proc.start()

    start.started = started  # type: ignore[attr-defined]  # read by pytest_runtest_makereport
    yield start
    for proc in started:
        proc.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran operators reports the tail of each operator's log: an intermittent
    failure in CI is then readable from its report alone."""
    report = yield
    start = getattr(item, "funcargs", {}).get("start_operator")
    if report.failed and start is not None:
        for proc in getattr(start, "started", ()):
            report.sections.append((f"operator log {proc.log_path.name} (last 60 lines)", proc.log_tail(60)))
    return report


@pytest.fixture
def ids(namespace: str) -> Callable[[str], str]:
    """Resource names unique across test runs: LiteLLM is shared by the whole session."""
    return lambda base: f"{base}-{namespace}"


@pytest.fixture
async def scim_token(kube_api: client.ApiClient, namespace: str) -> str:
    _, value = await tokens.create_token(kube_api, namespace, name="e2e")
    return value


@pytest.fixture
def endpoint(namespace: str, endpoint_kubeconfig: str, scim_token: str, tmp_path: Path) -> Iterator[str]:
    """A ``litellm-scim endpoint`` subprocess as the chart's endpoint ServiceAccount; its SCIM base URL."""
    ep = start_endpoint(endpoint_kubeconfig, namespace, tmp_path / "endpoint.log")
    try:
        yield f"{ep.url}/scim/v2"
    finally:
        stop_endpoint(ep)


@pytest.fixture
async def scim(endpoint: str, scim_token: str) -> AsyncIterator[Callable[..., Any]]:
    """``await scim(method, path, body)`` -> (status, JSON body) against the endpoint, as an IdP."""
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {scim_token}", "Content-Type": SCIM})

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with session.request(method, endpoint + path, json=body) as resp:
            text = await resp.text()
            return resp.status, (await resp.json(content_type=None)) if text else None

    yield call
    await session.close()
