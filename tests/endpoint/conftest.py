"""Fixtures for the SCIM endpoint: a token Secret, the app on a test HTTP server backed by the real API
server, and real ``litellm-scim endpoint`` processes for the multi-replica tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from operator_helpers import EndpointProcess, start_endpoint, stop_endpoint
from scim_http import Scim, backing, write_tokens

from scim_endpoint.app import create_app


@pytest.fixture
async def token(kube_api: client.ApiClient, namespace: str) -> str:
    value = secrets.token_urlsafe(24)
    await write_tokens(kube_api, namespace, {"ci": value})
    return value


@pytest.fixture
async def scim(kube_api: client.ApiClient, endpoint_api: client.ApiClient, namespace: str,
               token: str) -> AsyncIterator[Scim]:
    """The app in-process, storing through the endpoint's ServiceAccount; ``Scim.api`` is the admin
    client tests inspect with."""
    async with backing(endpoint_api, namespace) as (store, tokens):
        app = create_app(store, tokens, max_results=50, max_body_bytes=1_048_576)
        async with TestServer(app) as server, TestClient(server) as http:
            yield Scim(http, token, kube_api, namespace)


@pytest.fixture
def endpoints(endpoint_kubeconfig: str, namespace: str, token: str,
              tmp_path: Path) -> Iterator[list[EndpointProcess]]:
    """Two endpoint processes (two replicas) on the same namespace."""
    started = [start_endpoint(endpoint_kubeconfig, namespace, tmp_path / f"endpoint-{i}.log") for i in range(2)]
    yield started
    for ep in started:
        stop_endpoint(ep)
