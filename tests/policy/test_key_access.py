"""Key delivery where the chart grants no Secret access: said plainly, never retried in silence, and
never in the way of taking access away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy, secret_data

import scim_contract as c
from litellm_scim import chart

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    return [f"{namespace}-apps"]


async def _condition(kube_rw: Kube, group: str, ctype: str, status: str) -> dict[str, Any] | None:
    cond = await kube_rw.condition(c.GROUP, group, ctype)
    return cond if cond and cond["status"] == status else None


async def _events(kube_rw: Kube, group: str, reason: str) -> list[tuple[str, str]]:
    return [(t, m) for t, r, m in await kube_rw.events(group) if r == reason]


@pytest.mark.denials("the policy delivers keys into a namespace outside operator.keySecretNamespaces")
async def test_keys_for_a_namespace_without_access_are_a_forbidden_condition(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    group, outside = ids("ops"), f"{namespace}-outside"
    await chart.ensure_namespace(kube_rw.core.api_client, outside)
    await put_policy(kube_rw, "ops", {"selector": {"displayNamePattern": "ops*"},
                                      "keys": {"perTeam": {"enabled": True, "secretNamespaces": [outside]}}})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Ops {namespace}"})

    cond = await eventually(lambda: _condition(kube_rw, group, "KeysDelivered", "False"), what="KeysDelivered=False")
    assert cond["reason"] == "Forbidden"
    assert f"cannot list secrets in namespace {outside} (forbidden for system:serviceaccount:" in cond["message"]
    events = await eventually(lambda: _events(kube_rw, group, "Forbidden"), what="a Forbidden event")
    assert events[0][0] == "Warning" and outside in events[0][1]
    # The team itself is not held back, and no key exists that nobody could receive.
    assert (await kube_rw.condition(c.GROUP, group, "Synced") or {}).get("status") == "True"
    status, listed = await admin.get("/key/list", key_alias=f"scim:{namespace}:{group}:@team@{outside}")
    assert status == 200 and listed["keys"] == []


@pytest.mark.denials("the operator's Secret access is withdrawn before the group is deleted")
async def test_deleting_a_group_revokes_its_keys_even_where_secrets_cannot_be_removed(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    group, apps = ids("bots"), f"{namespace}-apps"
    await put_policy(kube_rw, "bots", {"selector": {"displayNamePattern": "bots*"},
                                       "keys": {"perTeam": {"enabled": True, "secretNamespaces": [apps]}}})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Bots {namespace}"})
    name = f"litellm-team-key-{group}"
    key = (await eventually(lambda: secret_data(kube_rw, name, apps), what="team key in apps"))["api-key"]
    assert await admin.models_status(key) == 200

    # A platform admin removes the operator's Secret access in that namespace.
    rbac = client.RbacAuthorizationV1Api(kube_rw.core.api_client)
    for binding in (await rbac.list_namespaced_role_binding(apps)).items:
        await rbac.delete_namespaced_role_binding(binding.metadata.name, apps)

    await kube_rw.delete(c.GROUP, group)
    await eventually(lambda: _gone(kube_rw, group), within=30, what="the group released by its finalizer")
    assert await admin.models_status(key) == 401, "the key is dead although its Secret could not be removed"
    assert await admin.team(group) is None
    events = await _events(kube_rw, group, "Forbidden")
    assert events and events[0][0] == "Warning"
    assert f"cannot list secrets in namespace {apps} (forbidden for system:serviceaccount:" in events[0][1]


async def _gone(kube_rw: Kube, group: str) -> bool:
    return await kube_rw.get(c.GROUP, group) is None
