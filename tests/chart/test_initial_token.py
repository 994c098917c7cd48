"""The initial token of the chart's token Secret, issued by the endpoint: exactly one when replicas
race, only once in the Secret's life, and only with the permissions the chart grants. Everything
here runs as the chart's endpoint ServiceAccount; the admin client only sets up and inspects, and
plays the person running `litellm-scim token`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from helmchart import REQUIRED_VALUES, TOKEN_PATTERN, deep_merge, service_account_kubeconfig
from kubernetes_asyncio import client
from operator_helpers import EndpointProcess, eventually, start_endpoint, stop_endpoint

from litellm_scim import chart
from scim_common import kube, tokens

SECRET = tokens.DEFAULT_SECRET

AsEndpoint = Callable[..., Coroutine[Any, Any, str]]


@pytest.fixture
def as_endpoint(kube_api: client.ApiClient, namespace: str, kubeconfig: str, tmp_path: Path) -> AsEndpoint:
    """as_endpoint(values=None) -> kubeconfig of the endpoint's ServiceAccount, after applying what
    the chart renders for it with these values: its ServiceAccount, Role and RoleBinding, and the
    token Secret (when the chart makes one), as `helm install` would."""
    async def setup(values: dict[str, Any] | None = None) -> str:
        docs = chart.render(deep_merge(REQUIRED_VALUES, values or {}), release="scim", namespace=namespace)
        await chart.apply(kube_api, chart.of_kinds(docs, (*chart.RBAC_KINDS, "Secret")))
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                         and d["metadata"]["labels"]["app.kubernetes.io/component"] == "endpoint"]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        return await service_account_kubeconfig(kube_api, kubeconfig, namespace, account,
                                                tmp_path / "endpoint.kubeconfig")
    return setup


async def read_secret(api: client.ApiClient, namespace: str) -> client.V1Secret:
    return await client.CoreV1Api(api).read_namespaced_secret(SECRET, namespace)


async def accepts(url: str, token: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{url}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code == 200


async def test_two_endpoint_replicas_starting_on_an_empty_secret_make_exactly_one_token(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    endpoint_kubeconfig = await as_endpoint()
    assert not (await read_secret(kube_api, namespace)).data
    replicas: list[EndpointProcess] = list(await asyncio.gather(*(
        asyncio.to_thread(start_endpoint, endpoint_kubeconfig, namespace, tmp_path / f"endpoint-{i}.log")
        for i in range(2))))
    try:
        issued = await eventually(lambda: tokens.read_tokens(kube_api, namespace, SECRET), within=15,
                                  what="the initial token")
        token = issued["default"]
        for ep in replicas:
            await eventually(lambda ep=ep: accepts(ep.url, token), what=f"{ep.url} accepting the token")
    finally:
        for ep in replicas:
            await asyncio.to_thread(stop_endpoint, ep)
    secret = await read_secret(kube_api, namespace)
    assert list(secret.data) == ["default"]
    assert tokens.INITIAL_TOKEN_ISSUED_ANNOTATION in secret.metadata.annotations
    logs = [ep.log.read_text() for ep in replicas]
    assert sum("issued the initial SCIM token" in log for log in logs) == 1
    assert not any(token in log for log in logs)


async def test_concurrent_issuers_write_one_token_and_the_others_see_it(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str) -> None:
    """Eight writers at once, each its own connection: the conditional update lets exactly one win."""
    endpoint_kubeconfig = await as_endpoint()
    apis = [await kube.api_client(endpoint_kubeconfig) for _ in range(8)]
    try:
        results = await asyncio.gather(*(tokens.issue_initial_token(api, namespace, SECRET) for api in apis))
    finally:
        for api in apis:
            await api.close()
    assert results.count("default") == 1 and results.count(None) == 7, results
    issued = await tokens.read_tokens(kube_api, namespace, SECRET)
    assert list(issued) == ["default"]
    value = issued["default"]
    assert value.startswith(tokens.TOKEN_PREFIX) and TOKEN_PATTERN.fullmatch(value)
    assert len(value) - len(tokens.TOKEN_PREFIX) >= 43, "256 random bits, as `token create` makes them"
    annotations = (await read_secret(kube_api, namespace)).metadata.annotations
    assert annotations[f"{tokens.CREATED_ANNOTATION_PREFIX}default"] == annotations[
        tokens.INITIAL_TOKEN_ISSUED_ANNOTATION]


async def test_issued_once_revoking_every_token_leaves_the_secret_empty(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str) -> None:
    endpoint_kubeconfig = await as_endpoint()
    async with await kube.api_client(endpoint_kubeconfig) as api:
        assert await tokens.issue_initial_token(api, namespace, SECRET) == "default"
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None
        await tokens.revoke_token(kube_api, namespace, SECRET, "default")  # the person, with the CLI
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None
    assert not (await read_secret(kube_api, namespace)).data


async def test_a_token_created_before_the_endpoint_ran_takes_the_initial_tokens_place(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str) -> None:
    endpoint_kubeconfig = await as_endpoint({"scimTokens": {"initialTokenName": "entra"}})
    await tokens.create_token(kube_api, namespace, SECRET, "okta")
    async with await kube.api_client(endpoint_kubeconfig) as api:
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None
        await tokens.revoke_token(kube_api, namespace, SECRET, "okta")
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None
    assert not (await read_secret(kube_api, namespace)).data


async def test_a_secret_without_the_request_gets_no_token(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str) -> None:
    """scimTokens.create=false: the Secret is the person's (or absent); the endpoint only reads it."""
    endpoint_kubeconfig = await as_endpoint({"scimTokens": {"create": False}})
    async with await kube.api_client(endpoint_kubeconfig) as api:
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None  # no Secret at all
        await tokens.create_token(kube_api, namespace, SECRET, "ci")
        await tokens.revoke_token(kube_api, namespace, SECRET, "ci")
        assert await tokens.issue_initial_token(api, namespace, SECRET) is None


@pytest.mark.denials("the endpoint runs under a Role without the update rule on purpose")
async def test_without_the_update_rule_the_endpoint_says_why_and_keeps_serving(
        as_endpoint: AsEndpoint, kube_api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    """A Secret asking for a token, but the Role of scimTokens.create=false (read only): the endpoint
    reports the refusal instead of failing, and takes a token made by hand at once."""
    endpoint_kubeconfig = await as_endpoint({"scimTokens": {"create": False}})
    await client.CoreV1Api(kube_api).create_namespaced_secret(namespace, {"metadata": {
        "name": SECRET, "annotations": {tokens.INITIAL_TOKEN_ANNOTATION: "default"}}})
    ep = await asyncio.to_thread(start_endpoint, endpoint_kubeconfig, namespace, tmp_path / "endpoint.log")
    try:
        await eventually(lambda: _logged(ep, "cannot issue the initial SCIM token"), what="the refusal logged")
        assert "forbidden" in ep.log.read_text()
        _, token = await tokens.create_token(kube_api, namespace, SECRET, "by-hand")
        await eventually(lambda: accepts(ep.url, token), what="the hand-made token accepted")
    finally:
        await asyncio.to_thread(stop_endpoint, ep)
    assert token not in ep.log.read_text()


async def _logged(ep: EndpointProcess, text: str) -> bool:
    return text in ep.log.read_text()
