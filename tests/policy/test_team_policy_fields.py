"""ScimTeamPolicy team fields beyond budgets (object permissions, member budget duration, blocked,
tags, guardrails) and team admin roles, against the real API server and LiteLLM proxy: what the
open-source proxy takes is applied and drift-checked, what it refuses shows on the group while the
rest of the team converges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum
from policy_helpers import create_users, put_policy, secret_data

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed in the test's namespace (team keys go there)."""
    return [namespace]


async def _synced(kube: Kube, name: str, status: str, reason: str) -> dict[str, Any] | None:
    cond = await kube.condition(c.GROUP, name, "Synced")
    return cond if cond and (cond["status"], cond.get("reason")) == (status, reason) else None


async def test_permissions_member_budget_duration_and_blocked_are_applied_and_drift_checked(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    group = ids("eng")
    permissions = {"mcpServers": ["github-mcp"], "mcpAccessGroups": ["dev-tools"], "vectorStores": ["docs-vs"]}
    spec: dict[str, Any] = {
        "selector": {"displayNamePattern": "engineering*"},
        "team": {"maxBudgetPerMember": 5, "memberBudgetDuration": "7d", "objectPermission": permissions,
                 "blocked": False},
        "keys": {"perTeam": {"enabled": True}},
    }
    await put_policy(kube_rw, "engineering", spec)
    await kube_rw.create(c.GROUP, group, {"displayName": f"Engineering {namespace}"})

    async def team_where(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        team = await admin.team(group)
        return team if team is not None and check(team) else None

    def perms(team: dict[str, Any]) -> dict[str, Any]:
        return team.get("object_permission") or {}

    team = await eventually(lambda: team_where(lambda t: perms(t).get("mcp_servers") == ["github-mcp"]),
                            what="object permissions applied on create")
    assert perms(team)["mcp_access_groups"] == ["dev-tools"] and perms(team)["vector_stores"] == ["docs-vs"]
    assert team["team_member_budget_table"]["budget_duration"] == "7d"
    assert team["team_member_budget_table"]["max_budget"] == 5.0
    assert team["blocked"] is False
    await eventually(lambda: _synced(kube_rw, group, "True", "Synced"), what="group synced")

    # Someone changes the permissions in LiteLLM: the drift check finds and corrects it.
    status, body = await admin.post("/team/update", {"team_id": group, "object_permission": {
        "mcp_servers": ["someone-elses-mcp"], "mcp_access_groups": ["dev-tools"], "vector_stores": ["docs-vs"]}})
    assert status == 200, body
    await eventually(lambda: team_where(lambda t: perms(t).get("mcp_servers") == ["github-mcp"]),
                     what="drift in object_permission corrected")
    events = await eventually(
        lambda: _events_with(kube_rw, group, "DriftCorrected", "object_permission.mcp_servers"),
        what="DriftCorrected event naming the field")
    assert "someone-elses-mcp" in events[0]

    # blocked: true really blocks the team's key at the proxy; false lets it work again.
    key = (await eventually(lambda: secret_data(kube_rw, f"litellm-team-key-{group}"),
                            what="team key Secret"))["api-key"]
    assert await admin.models_status(key) == 200
    spec["team"]["blocked"] = True
    await put_policy(kube_rw, "engineering", spec)
    await eventually(lambda: team_where(lambda t: t["blocked"] is True), what="team blocked")
    assert await eventually(lambda: _status_in(admin, key, {401, 403}), what="key refused") in (401, 403)
    spec["team"]["blocked"] = False
    await put_policy(kube_rw, "engineering", spec)
    await eventually(lambda: team_where(lambda t: t["blocked"] is False), what="team unblocked")
    assert await eventually(lambda: _status_in(admin, key, {200}), what="key works again") == 200

    # The member budget duration follows a policy change.
    spec["team"]["memberBudgetDuration"] = "30d"
    await put_policy(kube_rw, "engineering", spec)
    await eventually(lambda: team_where(lambda t: t["team_member_budget_table"]["budget_duration"] == "30d"),
                     what="member budget duration changed")


async def _status_in(admin: Admin, key: str, wanted: set[int]) -> int | None:
    status = await admin.models_status(key)
    return status if status in wanted else None


async def _events_with(kube: Kube, name: str, reason: str, text: str) -> list[str] | None:
    found = [m for _, r, m in await kube.events(name) if r == reason and text in m]
    return found or None


async def test_fields_the_proxy_refuses_show_on_the_group_and_hold_nothing_else_back(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    operator = start_operator(drift_interval="1")
    ann, group = ids("ann"), ids("eng")
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        # tags and guardrails are Enterprise-only on the open-source proxy (403).
        "team": {"maxBudget": 3, "tags": ["cost-a"], "guardrails": ["pii-mask"],
                 "objectPermission": {"mcpServers": ["github-mcp"]}},
        "keys": {"perTeam": {"enabled": True}},
    })
    await create_users(kube_rw, admin, [ann])
    await kube_rw.create(c.GROUP, group, {"displayName": f"Engineering {namespace}"})
    await kube_rw.set_members(group, [ann])

    cond = await eventually(lambda: _synced(kube_rw, group, "False", "PolicyFieldRefused"),
                            what="refusal on the group", within=60)
    assert "tags:" in cond["message"] and "guardrails:" in cond["message"]
    assert "Enterprise" in cond["message"]
    ready = await kube_rw.condition(c.GROUP, group, "Ready")
    assert ready is not None and ready["status"] == "True"
    warnings = await eventually(lambda: _warnings(kube_rw, group, "PolicyFieldRefused"), what="Warning Event")
    assert "tags:" in warnings[0]

    # Everything else converged: the team, its accepted settings, its member and its key.
    team = await admin.team(group)
    assert team is not None
    assert team["max_budget"] == 3.0
    assert (team.get("object_permission") or {}).get("mcp_servers") == ["github-mcp"]
    assert await eventually(lambda: _members_are(admin, group, [ann]), what="member added") == [ann]
    key = (await eventually(lambda: secret_data(kube_rw, f"litellm-team-key-{group}"),
                            what="team key Secret"))["api-key"]
    assert await admin.models_status(key) == 200

    # No retry loop: with a drift check every second, the refused fields are not sent again.
    before = metric_sum(operator.metrics(), "litellm_scim_operator_litellm_calls_total", endpoint="/team/update")
    await asyncio.sleep(5)
    after = metric_sum(operator.metrics(), "litellm_scim_operator_litellm_calls_total", endpoint="/team/update")
    assert after == before
    drifted = await kube_rw.condition(c.GROUP, group, "Drifted")
    assert drifted is not None and drifted["status"] == "False"

    # Dropping the refused fields from the policy makes the group synced again.
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        "team": {"maxBudget": 3, "objectPermission": {"mcpServers": ["github-mcp"]}},
        "keys": {"perTeam": {"enabled": True}},
    })
    await eventually(lambda: _synced(kube_rw, group, "True", "Synced"), what="synced without the refused fields")


async def _warnings(kube: Kube, name: str, reason: str) -> list[str] | None:
    found = [m for t, r, m in await kube.events(name) if t == "Warning" and r == reason]
    return found or None


async def _members_are(admin: Admin, team_id: str, want: list[str]) -> list[str] | None:
    members = await admin.members(team_id)
    return members if members == sorted(want) else None


async def test_admin_groups_refused_by_the_proxy_show_on_the_group_and_hold_nothing_else_back(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    ann, ben, team_group, admins = ids("ann"), ids("ben"), ids("eng"), ids("admins")
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        "team": {"maxBudget": 4, "adminGroups": {"displayNamePattern": "llm-admins*"}},
        "keys": {"perTeam": {"enabled": True}},
    })
    await create_users(kube_rw, admin, [ann, ben])
    await kube_rw.create(c.GROUP, admins, {"displayName": f"LLM-Admins {namespace}"})
    await kube_rw.set_members(admins, [ann])
    await kube_rw.create(c.GROUP, team_group, {"displayName": f"Engineering {namespace}"})
    await kube_rw.set_members(team_group, [ann, ben])

    # The open-source proxy answers 400 "Assigning team admins is a premium feature".
    cond = await eventually(lambda: _synced(kube_rw, team_group, "False", "MemberRoleRefused"),
                            what="role refusal on the group", within=60)
    assert "team role admin for" in cond["message"] and "premium feature" in cond["message"]
    warnings = await eventually(lambda: _warnings(kube_rw, team_group, "MemberRoleRefused"), what="Warning Event")
    assert "premium feature" in warnings[0]

    # Nothing else about the team is held back: members (as plain members), settings, key.
    assert await eventually(lambda: _members_are(admin, team_group, [ann, ben]), what="members") == sorted(
        [ann, ben])
    team = await admin.team(team_group)
    assert team is not None and team["max_budget"] == 4.0
    assert {m["user_id"]: m["role"] for m in team["members_with_roles"]} == {ann: "user", ben: "user"}
    key = (await eventually(lambda: secret_data(kube_rw, f"litellm-team-key-{team_group}"),
                            what="team key Secret"))["api-key"]
    assert await admin.models_status(key) == 200
    # The admin group itself is not selected by the policy: its own team is synced.
    await eventually(lambda: _synced(kube_rw, admins, "True", "Synced"), what="admin group's own team synced")

    # Without adminGroups the policy leaves roles alone, and the group is synced again.
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        "team": {"maxBudget": 4},
        "keys": {"perTeam": {"enabled": True}},
    })
    await eventually(lambda: _synced(kube_rw, team_group, "True", "Synced"), what="synced without adminGroups")
