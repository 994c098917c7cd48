"""Virtual keys from a ScimTeamPolicy, delivered as Secrets; revocation; against the real peers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import create_users, put_policy, secret, secret_data

import scim_contract as c
from litellm_scim import chart

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed where these tests' policies deliver them."""
    return [namespace, f"{namespace}-apps"]


async def _keys_with_alias(admin: Admin, alias: str) -> list[dict[str, Any]]:
    status, data = await admin.get("/key/list", key_alias=alias, return_full_object="true")
    assert status == 200, data
    return [k for k in data["keys"] if k.get("key_alias") == alias]


async def test_member_and_team_keys_are_delivered_and_revoked(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    # Debug logging: even the most verbose logs must not carry a key.
    operator = start_operator(drift_interval="600", log_level="debug")
    ann, ben, group = ids("ann"), ids("ben"), ids("eng")
    other_ns = f"{namespace}-apps"
    await chart.ensure_namespace(kube_rw.core.api_client, other_ns)
    # A Secret someone else owns, with the name the team key's Secret would get in that namespace.
    await kube_rw.core.create_namespaced_secret(other_ns, {  # type: ignore[arg-type]
        "metadata": {"name": f"litellm-team-key-{group}"}, "data": {"api-key": "bm90LW91cnM="}})  # not-ours
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        "team": {"models": ["gpt-4o"]},
        "keys": {"perMember": {"enabled": True, "models": ["gpt-4o"], "maxBudget": 3, "duration": "30d"},
                 "perTeam": {"enabled": True, "secretNamespaces": [namespace, other_ns]}},
    })
    await create_users(kube_rw, admin, [ann, ben])
    await kube_rw.create(c.GROUP, group, {"displayName": f"Engineering {namespace}"})
    await kube_rw.set_members(group, [ann, ben])

    ann_secret, ben_secret = f"litellm-key-{group}-{ann}", f"litellm-key-{group}-{ben}"
    team_secret = f"litellm-team-key-{group}"
    ann_key = (await eventually(lambda: secret_data(kube_rw, ann_secret), what="ann's key Secret"))["api-key"]
    ben_key = (await eventually(lambda: secret_data(kube_rw, ben_secret), what="ben's key Secret"))["api-key"]
    team_data = await eventually(lambda: secret_data(kube_rw, team_secret), what="team key Secret")
    assert team_data["base-url"] == admin.url
    assert ann_key.startswith("sk-") and len({ann_key, ben_key, team_data["api-key"]}) == 3

    # The keys work against the proxy.
    for key in (ann_key, ben_key, team_data["api-key"]):
        assert await admin.models_status(key) == 200

    # Labelled for `kubectl get secrets -l`, owned by the group, alias and settings from the policy.
    listing = await kube_rw.core.list_namespaced_secret(
        namespace, label_selector=f"app.kubernetes.io/managed-by=litellm-scim-operator,{c.LABEL_GROUP}={group}")
    assert sorted(s.metadata.name for s in listing.items) == sorted([ann_secret, ben_secret, team_secret])
    ann_obj = await secret(kube_rw, ann_secret)
    assert ann_obj.metadata.labels[f"{c.API_GROUP}/user"] == ann
    group_obj = await kube_rw.get(c.GROUP, group)
    assert group_obj is not None
    assert [(o.kind, o.name, o.uid) for o in ann_obj.metadata.owner_references] == [
        ("ScimGroup", group, group_obj["metadata"]["uid"])]
    [ann_llm] = await _keys_with_alias(admin, f"scim:{namespace}:{group}:{ann}@{namespace}")
    assert ann_llm["user_id"] == ann and ann_llm["team_id"] == group
    assert ann_llm["models"] == ["gpt-4o"] and ann_llm["max_budget"] == 3.0
    assert ann_llm["metadata"]["litellm-scim-operator"] == f"{namespace}/{group}"

    # A Secret that cannot be written (someone else's is in the way) leaves no key behind in LiteLLM,
    # and the other Secret is untouched.
    events = await eventually(lambda: _events_with(kube_rw, group, "KeyDeliveryFailed"), what="failure event")
    assert f"{other_ns}/{team_secret}" in events[0]
    assert await _keys_with_alias(admin, f"scim:{namespace}:{group}:@team@{other_ns}") == []
    assert (await secret_data(kube_rw, team_secret, other_ns)) == {"api-key": "not-ours"}
    cond = await eventually(lambda: _condition(kube_rw, group, "KeysDelivered", "False"), what="condition")
    assert "not managed by this operator" in cond["message"]

    async def status_keys() -> dict[str, Any] | None:
        obj = await kube_rw.get(c.GROUP, group)
        keys = ((obj or {}).get("status") or {}).get("keys") or {}
        return keys if keys.get("issued") == 3 else None

    assert (await eventually(status_keys, what="key count in status"))["namespaces"] == [namespace]

    # Deactivation: the same key is refused within seconds and its Secret disappears.
    await kube_rw.patch_spec(c.USER, ann, {"active": False})
    await eventually(lambda: _status_is(admin, ann_key, 401), within=10, what="deactivated user's key refused")
    await eventually(lambda: _absent(kube_rw, ann_secret), within=10, what="deactivated user's Secret removed")
    assert await _keys_with_alias(admin, f"scim:{namespace}:{group}:{ann}@{namespace}") == []

    # Removal from the group: likewise.
    await kube_rw.set_members(group, [ann])
    await eventually(lambda: _status_is(admin, ben_key, 401), within=10, what="removed member's key refused")
    await eventually(lambda: _absent(kube_rw, ben_secret), within=10, what="removed member's Secret removed")
    assert await admin.models_status(team_data["api-key"]) == 200  # the team key is unaffected

    # Reactivation issues a new personal key (the old one stays dead).
    await kube_rw.patch_spec(c.USER, ann, {"active": True})
    again = await eventually(lambda: secret_data(kube_rw, ann_secret), within=15, what="new key after reactivation")
    assert again["api-key"] != ann_key
    assert await admin.models_status(again["api-key"]) == 200
    assert await admin.models_status(ann_key) == 401

    # The plaintext never leaves the Secret: not in status, events or logs.
    group_obj = await kube_rw.get(c.GROUP, group)
    visible = str(group_obj) + str(await kube_rw.events(group)) + operator.log_text()
    for key in (ann_key, ben_key, team_data["api-key"], again["api-key"]):
        assert key not in visible

    # Deleting the group revokes every key it gave out.
    await kube_rw.delete(c.GROUP, group)
    await eventually(lambda: _status_is(admin, team_data["api-key"], 401), within=15, what="team key revoked")
    await eventually(lambda: _absent(kube_rw, team_secret), within=10, what="team Secret removed")


async def _status_is(admin: Admin, key: str, expected: int) -> bool:
    return await admin.models_status(key) == expected


async def _absent(kube: Kube, name: str) -> bool:
    return await secret(kube, name) is None


async def _events_with(kube: Kube, name: str, reason: str) -> list[str]:
    return [m for _, r, m in await kube.events(name) if r == reason]


async def _condition(kube: Kube, name: str, ctype: str, status: str) -> dict[str, Any] | None:
    cond = await kube.condition(c.GROUP, name, ctype)
    return cond if cond and cond["status"] == status else None


async def test_deleting_a_policy_falls_back_to_the_default_and_revokes_its_keys(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    group = ids("bots")
    await put_policy(kube_rw, "everyone", {"default": True, "team": {"maxBudget": 1}})
    await put_policy(kube_rw, "bots", {"selector": {"displayNamePattern": "bots*"}, "team": {"maxBudget": 9},
                                       "keys": {"perTeam": {"enabled": True}}})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Bots {namespace}"})
    name = f"litellm-team-key-{group}"
    key = (await eventually(lambda: secret_data(kube_rw, name), what="team key"))["api-key"]
    assert await admin.models_status(key) == 200

    await kube_rw.delete(c.POLICY, "bots")
    await eventually(lambda: _policy_gone(kube_rw, "bots"), within=15, what="policy deleted (finalizer released)")
    await eventually(lambda: _status_is(admin, key, 401), within=15, what="key of the deleted policy revoked")
    await eventually(lambda: _absent(kube_rw, name), within=10, what="its Secret removed")

    async def fell_back() -> bool:
        obj = await kube_rw.get(c.GROUP, group)
        team = await admin.team(group)
        return ((obj or {}).get("status") or {}).get("policy") == "everyone" and (team or {}).get("max_budget") == 1.0

    await eventually(fell_back, within=15, what="default policy in effect")


async def _policy_gone(kube: Kube, name: str) -> bool:
    return await kube.get(c.POLICY, name) is None
