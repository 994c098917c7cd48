"""Helpers of the policy tests: writing ScimTeamPolicies and reading key Secrets."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from operator_helpers import Kube

import scim_contract as c


async def put_policy(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    """Create the policy, or replace its spec (as `kubectl apply` would)."""
    if await kube.get(c.POLICY, name) is None:
        await kube.create(c.POLICY, name, spec)
    else:
        body = await kube.get(c.POLICY, name)
        assert body is not None
        body["spec"] = spec
        await kube.objects.replace_namespaced_custom_object(
            c.API_GROUP, c.VERSION, kube.ns, c.POLICY.plural, name, body)


async def secret_data(kube: Kube, name: str, namespace: str | None = None) -> dict[str, str] | None:
    try:
        secret = await kube.core.read_namespaced_secret(name, namespace or kube.ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


async def secret(kube: Kube, name: str, namespace: str | None = None) -> Any:
    try:
        return await kube.core.read_namespaced_secret(name, namespace or kube.ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
