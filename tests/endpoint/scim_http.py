"""Helpers of the endpoint tests: a SCIM client and the token Secret (real endpoint processes: operator_helpers)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from kubernetes_asyncio import client

from scim_endpoint.auth import Tokens
from scim_endpoint.store import Store

TOKEN_SECRET = "litellm-scim-tokens"
SCIM = "application/scim+json"



@contextlib.asynccontextmanager
async def backing(api: client.ApiClient, namespace: str, **store_options: Any) -> AsyncIterator[tuple[Store, Tokens]]:
    """What an in-process app stands on: the store and the token watch, synced, through ``api`` (the
    endpoint's ServiceAccount), stopped again on exit."""
    store = Store(api, namespace, **store_options)
    tokens = Tokens(api, namespace, TOKEN_SECRET)
    store.start()
    tokens.start()
    try:
        await asyncio.wait_for(asyncio.gather(store.wait_ready(), tokens.informer.synced.wait()), 30)
        yield store, tokens
    finally:
        await tokens.stop()
        await store.stop()


async def write_tokens(api: client.ApiClient, namespace: str, tokens: dict[str, str]) -> None:
    """Create or replace the token Secret with exactly these name -> token entries."""
    core = client.CoreV1Api(api)
    body = {
        "metadata": {"name": TOKEN_SECRET,
                     "annotations": {f"tokens.scim.litellm-operator.dev/{n}": "2026-01-01T00:00:00Z" for n in tokens}},
        "data": {n: base64.b64encode(t.encode()).decode() for n, t in tokens.items()},
    }
    try:
        current = await core.read_namespaced_secret(TOKEN_SECRET, namespace)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
        await core.create_namespaced_secret(namespace, body)
        return
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    await core.replace_namespaced_secret(TOKEN_SECRET, namespace, body)


@dataclass
class Response:
    status: int
    body: Any
    headers: Any
    text: str = field(repr=False, default="")


class Scim:
    """A SCIM client bound to one endpoint, plus the namespace it stores into."""

    def __init__(self, http: TestClient[Any, Any] | aiohttp.ClientSession, token: str, api: client.ApiClient,
                 namespace: str, base: str = "") -> None:
        self.http = http
        self.token = token
        self.api = api
        self.namespace = namespace
        self.base = base

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   content_type: str = SCIM) -> Response:
        sent = {"Authorization": f"Bearer {token if token is not None else self.token}", **(headers or {})}
        data: bytes | None = raw
        if body is not None:
            import json

            data = json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = content_type
        url = f"{self.base}/scim/v2{path}"
        async with self.http.request(method, url, data=data, headers=sent) as resp:
            text = await resp.text()
            parsed: Any = None
            if text:
                import json

                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
            return Response(resp.status, parsed, resp.headers, text)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.call("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, **kw: Any) -> Response:
        return await self.call("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.call("DELETE", path, **kw)


USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def user_body(user_name: str, **extra: Any) -> dict[str, Any]:
    return {"schemas": [USER], "userName": user_name, **extra}


def patch_body(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(ops)}


def assert_error(resp: Any, status: int, scim_type: str | None = None) -> None:
    assert resp.status == status, resp.text
    assert resp.headers["Content-Type"].startswith(SCIM)
    assert resp.body["schemas"] == [ERROR]
    assert resp.body["status"] == str(status)
    assert resp.body["detail"]
    if scim_type:
        assert resp.body.get("scimType") == scim_type
