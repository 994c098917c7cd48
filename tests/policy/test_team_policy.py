"""ScimTeamPolicy -> LiteLLM team settings, against the real API server and LiteLLM proxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


async def test_policy_sets_team_settings_and_follows_changes(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    eng, sales = ids("eng"), ids("sales")
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"}, "priority": 10,
        "team": {"models": ["gpt-4o"], "maxBudget": 25, "budgetDuration": "30d", "tpmLimit": 1000,
                 "rpmLimit": 50, "maxBudgetPerMember": 5, "metadata": {"cost-center": "cc-42"}},
    })
    await put_policy(kube_rw, "fallback", {"default": True, "team": {"models": ["claude-3"], "maxBudget": 1}})
    await kube_rw.create(c.GROUP, eng, {"displayName": f"Engineering {namespace}"})
    await kube_rw.create(c.GROUP, sales, {"displayName": f"Sales {namespace}"})

    async def team_has(team_id: str, **want: Any) -> dict[str, Any] | None:
        team = await admin.team(team_id)
        if team is None:
            return None
        return team if all(team.get(k) == v for k, v in want.items()) else None

    team = await eventually(lambda: team_has(eng, max_budget=25.0), what="engineering team with budget")
    assert team["models"] == ["gpt-4o"]
    assert (team["budget_duration"], team["tpm_limit"], team["rpm_limit"]) == ("30d", 1000, 50)
    assert team["team_member_budget_table"]["max_budget"] == 5.0
    assert team["metadata"]["cost-center"] == "cc-42"
    assert team["metadata"]["litellm-scim-operator"] == f"{namespace}/{eng}"  # ownership kept
    fallback = await eventually(lambda: team_has(sales, max_budget=1.0), what="default policy on sales")
    assert fallback["models"] == ["claude-3"]

    async def group_policy(name: str, policy: str) -> dict[str, Any] | None:
        obj = await kube_rw.get(c.GROUP, name)
        return obj if ((obj or {}).get("status") or {}).get("policy") == policy else None

    await eventually(lambda: group_policy(eng, "engineering"), what="group status names its policy")
    await eventually(lambda: group_policy(sales, "fallback"), what="group status names the default")

    # Changing the policy re-reconciles the team it selects; metadata others wrote is kept.
    status, _ = await admin.post("/team/update", {"team_id": eng, "metadata": {
        **team["metadata"], "set-by-ui": "yes"}})
    assert status == 200
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"}, "priority": 10,
        "team": {"models": ["gpt-4o", "claude-3"], "maxBudget": 40, "metadata": {"cost-center": "cc-43"}},
    })
    team = await eventually(lambda: team_has(eng, max_budget=40.0), what="policy change applied")
    assert sorted(team["models"]) == ["claude-3", "gpt-4o"]
    assert team["metadata"]["cost-center"] == "cc-43"
    assert team["metadata"]["set-by-ui"] == "yes"

    # A higher-priority policy selecting by label takes over when the group gets the label.
    await put_policy(kube_rw, "gold", {"selector": {"labelSelector": {"matchLabels": {"tier": "gold"}}},
                                       "priority": 100, "team": {"maxBudget": 99}})
    await kube_rw.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.GROUP.plural, eng, {"metadata": {"labels": {"tier": "gold"}}},
        _content_type="application/merge-patch+json")
    await eventually(lambda: team_has(eng, max_budget=99.0), what="label-selected policy wins")
    await eventually(lambda: group_policy(eng, "gold"), what="group status names the new policy")

    # Policy status: how many groups each is the effective policy of, and how many are synced.
    async def counts(name: str, selected: int) -> dict[str, Any] | None:
        obj = await kube_rw.get(c.POLICY, name)
        st = (obj or {}).get("status") or {}
        return st if st.get("selectedGroups") == selected and st.get("syncedGroups") == selected else None

    await eventually(lambda: counts("gold", 1), what="gold policy counts")
    await eventually(lambda: counts("fallback", 1), what="fallback policy counts")
    await eventually(lambda: counts("engineering", 0), what="engineering policy no longer selected")

    # Drift in a policy-managed setting is seen and corrected by the drift check.
    events = await kube_rw.events(eng)
    assert any(r == "Updated" and "max_budget" in m for _, r, m in events)


async def test_policy_deletion_and_drift_policies(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    kept = ids("kept")
    await put_policy(kube_rw, "keep-report", {"selector": {"displayNamePattern": "kept*"},
                                              "deletionPolicy": "keep", "driftPolicy": "report",
                                              "team": {"maxBudget": 7}})
    await kube_rw.create(c.GROUP, kept, {"displayName": f"Kept {namespace}"})
    await eventually(lambda: _budget_is(admin, kept, 7.0), what="team created by the policy")

    # Drift policy "report" from the policy (the operator flag says "correct").
    status, _ = await admin.post("/team/update", {"team_id": kept, "max_budget": 1000})
    assert status == 200
    cond = await eventually(lambda: _drifted(kube_rw, kept), what="drift reported")
    assert "max_budget" in cond["message"]
    assert (await admin.team(kept) or {}).get("max_budget") == 1000.0  # reported, not corrected

    # Deletion policy "keep" from the policy: the team survives the group.
    await kube_rw.delete(c.GROUP, kept)
    await eventually(lambda: _gone(kube_rw, kept), what="group deleted")
    assert await admin.team(kept) is not None


async def _budget_is(admin: Admin, team_id: str, budget: float) -> bool:
    team = await admin.team(team_id)
    return team is not None and team.get("max_budget") == budget


async def _drifted(kube: Kube, name: str) -> dict[str, Any] | None:
    cond = await kube.condition(c.GROUP, name, "Drifted")
    return cond if cond and cond["status"] == "True" else None


async def _gone(kube: Kube, name: str) -> bool:
    return await kube.get(c.GROUP, name) is None


async def test_team_id_strategy_from_the_policy(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")  # the operator flag says "name"
    group, external = ids("sso"), ids("entra-object-id")
    await put_policy(kube_rw, "sso", {"selector": {"externalIds": [external]}, "teamIdStrategy": "externalId"})
    await kube_rw.create(c.GROUP, group, {"displayName": f"SSO {namespace}", "externalId": external})

    async def team_id() -> str | None:
        obj = await kube_rw.get(c.GROUP, group)
        return (((obj or {}).get("status") or {}).get("litellm") or {}).get("teamId")

    assert await eventually(team_id, what="team id in status") == external
    assert await admin.team(external) is not None
    assert await admin.team(group) is None
