"""Helpers of the policy tests: writing ScimTeamPolicies and reading key Secrets."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from operator_helpers import Admin, Kube, eventually

import scim_contract as c
from scim_operator.key_secrets import ANNOTATION_ROTATE


async def put_policy(kube: Kube, name: str, spec: dict[str, Any], kind: c.ResourceKind = c.POLICY) -> None:
    """Create the policy (a ScimTeamPolicy unless ``kind`` says otherwise), or replace its spec (as
    `kubectl apply` would)."""
    if await kube.get(kind, name) is None:
        await kube.create(kind, name, spec)
    else:
        body = await kube.get(kind, name)
        assert body is not None
        body["spec"] = spec
        await kube.objects.replace_namespaced_custom_object(
            c.API_GROUP, c.VERSION, kube.ns, kind.plural, name, body)


async def create_users(kube: Kube, admin: Admin, names: list[str]) -> None:
    """ScimUsers as the endpoint writes them, once each is a LiteLLM user."""
    for name in names:
        await kube.create(c.USER, name, {"userName": f"{name}@example.com"})
    for name in names:
        await eventually(lambda n=name: admin.user(n), what=f"user {name}")  # type: ignore[misc]


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


async def rotate_keys(kube: Kube, group: str, value: str) -> None:
    """Ask for a rotation of the group's keys, as `kubectl annotate` does."""
    await kube.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, kube.ns, c.GROUP.plural, group,
        {"metadata": {"annotations": {ANNOTATION_ROTATE: value}}}, _content_type="application/merge-patch+json")


def key_other_than(kube: Kube, name: str, old: str) -> Callable[[], object]:
    """A probe: the key in the Secret once it is not ``old`` any more."""
    async def probe() -> str | None:
        data = await secret_data(kube, name)
        return data["api-key"] if data and data["api-key"] != old else None

    return probe
