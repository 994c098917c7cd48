"""A key deleted or changed in LiteLLM behind the operator's back is reported and repaired."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy, secret_data

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed where these tests' policies deliver them."""
    return [namespace]


async def _hash_of(admin: Admin, alias: str) -> str:
    status, data = await admin.get("/key/list", key_alias=alias, return_full_object="true")
    assert status == 200, data
    [key] = [k for k in data["keys"] if k.get("key_alias") == alias]
    return str(key["token"])


def _new_working_key(kube: Kube, admin: Admin, name: str, old: str) -> Callable[[], object]:
    async def probe() -> str | None:
        data = await secret_data(kube, name)
        if not data or data["api-key"] == old:
            return None
        return data["api-key"] if await admin.models_status(data["api-key"]) == 200 else None

    return probe


async def test_deleted_or_changed_key_is_replaced(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    group = ids("ops")
    await put_policy(kube_rw, "ops", {"selector": {"displayNamePattern": "ops*"},
                                      "keys": {"perTeam": {"enabled": True, "maxBudget": 5}}})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Ops {namespace}"})
    name, alias = f"litellm-team-key-{group}", f"scim:{namespace}:{group}:@team@{namespace}"
    first = (await eventually(lambda: secret_data(kube_rw, name), what="team key"))["api-key"]

    # Deleted in LiteLLM: reported, and a new key is written into the same Secret.
    status, _ = await admin.post("/key/delete", {"keys": [await _hash_of(admin, alias)]})
    assert status == 200
    second = await eventually(_new_working_key(kube_rw, admin, name, first), within=20, what="deleted key replaced")
    events = await eventually(lambda: _events(kube_rw, group, "DriftDetected"), what="drift event")
    assert any("deleted or renamed in LiteLLM" in m for m in events)

    # Changed in LiteLLM (budget raised in the UI): replaced by a key with the policy's settings.
    status, _ = await admin.post("/key/update", {"key": await _hash_of(admin, alias), "max_budget": 500})
    assert status == 200
    await eventually(_new_working_key(kube_rw, admin, name, second), within=20, what="changed key replaced")
    status, data = await admin.get("/key/list", key_alias=alias, return_full_object="true")
    assert [k["max_budget"] for k in data["keys"] if k.get("key_alias") == alias] == [5.0]
    assert await admin.models_status(second) == 401  # the tampered key is gone


async def test_report_only_drift_leaves_the_key_alone(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    group = ids("audit")
    await put_policy(kube_rw, "audit", {"selector": {"displayNamePattern": "audit*"}, "driftPolicy": "report",
                                        "keys": {"perTeam": {"enabled": True, "maxBudget": 5}}})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Audit {namespace}"})
    name, alias = f"litellm-team-key-{group}", f"scim:{namespace}:{group}:@team@{namespace}"
    key = (await eventually(lambda: secret_data(kube_rw, name), what="team key"))["api-key"]
    status, _ = await admin.post("/key/update", {"key": await _hash_of(admin, alias), "max_budget": 500})
    assert status == 200

    async def drifted() -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.GROUP, group, "Drifted")
        return cond if cond and cond["status"] == "True" else None

    cond = await eventually(drifted, within=20, what="drift reported")
    assert "max_budget is 500.0" in cond["message"]
    assert (await secret_data(kube_rw, name) or {}).get("api-key") == key
    assert await admin.models_status(key) == 200


async def _events(kube: Kube, name: str, reason: str) -> list[str]:
    return [m for _, r, m in await kube.events(name) if r == reason]
