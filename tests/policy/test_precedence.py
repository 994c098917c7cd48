"""Which ScimTeamPolicy a group gets, and what it asks of the LiteLLM team (pure rules)."""

from __future__ import annotations

from typing import Any

import pytest

from scim_contract import TeamSettings
from scim_operator.policies import (
    GroupEntry,
    GroupFacts,
    Policy,
    admin_groups,
    effective,
    member_roles,
    parse_policy,
    refusal,
    role_changes,
    seconds,
    selects,
    team_differences,
    team_fields,
    team_metadata,
)


def policy(name: str, **spec: Any) -> Policy:
    parsed = parse_policy(name, 1, spec)
    assert parsed is not None
    return parsed


ENG = GroupFacts("g1", "Engineering EU", "ext-1", {"tier": "gold", "region": "eu"})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"displayNamePattern": "engineering*"}, True),  # case-insensitive glob
        ({"displayNamePattern": "Engineering"}, False),  # whole name, not a prefix
        ({"displayNamePattern": "*[EU]"}, True),
        ({"externalIds": ["ext-2", "ext-1"]}, True),
        ({"externalIds": ["ext-2"]}, False),
        ({"labelSelector": {"matchLabels": {"tier": "gold"}}}, True),
        ({"labelSelector": {"matchLabels": {"tier": "silver"}}}, False),
        ({"labelSelector": {"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu", "us"]}]}},
         True),
        ({"labelSelector": {"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["eu"]}]}},
         False),
        ({"labelSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}}, True),
        ({"labelSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}, False),
        # Every criterion set must match.
        ({"displayNamePattern": "Eng*", "externalIds": ["nope"]}, False),
        ({"displayNamePattern": "Eng*", "labelSelector": {"matchLabels": {"tier": "gold"}}}, True),
        # An empty selector selects nothing.
        ({}, False),
    ],
)
def test_selector_criteria(selector: dict[str, Any], expected: bool) -> None:
    assert selects(policy("p", selector=selector).spec, ENG) is expected


@pytest.mark.parametrize(
    ("pattern", "display_name"),
    [
        ("caf\u00e9-*", "Cafe\u0301-Ops"),  # composed pattern, decomposed name
        ("cafe\u0301-*", "CAF\u00c9-ops"),  # decomposed pattern, composed name
        ("stra\u00dfe", "STRASSE"),  # case folding beyond lower()
    ],
)
def test_display_name_pattern_matches_every_form_of_one_name(pattern: str, display_name: str) -> None:
    group = GroupFacts("g3", display_name, None)
    assert selects(policy("p", selector={"displayNamePattern": pattern}).spec, group)


def test_group_without_external_id_is_not_selected_by_external_ids() -> None:
    group = GroupFacts("g2", "Sales", None)
    assert not selects(policy("p", selector={"externalIds": ["ext-1"]}).spec, group)


def test_highest_priority_wins_then_name() -> None:
    low = policy("a-low", selector={"displayNamePattern": "*"}, priority=1)
    high = policy("z-high", selector={"displayNamePattern": "eng*"}, priority=10)
    tie = policy("m-tie", selector={"externalIds": ["ext-1"]}, priority=10)
    assert effective([low, high], ENG) == high
    assert effective([low, high, tie], ENG) == tie  # equal priority: the name that sorts first
    assert effective([tie, high, low], ENG) == tie  # order of listing does not matter


def test_default_applies_only_when_no_selector_matches() -> None:
    fallback = policy("fallback", default=True, priority=100)
    other = policy("sales", selector={"displayNamePattern": "sales*"})
    assert effective([fallback, other], ENG) == fallback
    explicit = policy("eng", selector={"displayNamePattern": "eng*"}, priority=-5)
    assert effective([fallback, other, explicit], ENG) == explicit  # explicit beats default, any priority
    assert effective([other], ENG) is None
    second = policy("another-default", default=True, priority=100)
    assert effective([fallback, second], ENG) == second


def test_invalid_spec_is_rejected() -> None:
    assert parse_policy("bad", 1, {"team": {"maxBudget": -1}}) is None
    assert parse_policy("bad", 1, {"keys": {"perMember": {"rotation": {"every": "soon"}}}}) is None


def test_team_fields_and_differences() -> None:
    team = TeamSettings(models=["gpt-4o"], maxBudget=10, budgetDuration="30d", maxBudgetPerMember=2.5,
                        metadata={"cost-center": "42"})
    assert team_fields(team) == {"models": ["gpt-4o"], "max_budget": 10, "budget_duration": "30d",
                                 "team_member_budget": 2.5}
    info = {"models": ["gpt-4o"], "max_budget": 10.0, "budget_duration": "30d",
            "team_member_budget_table": {"max_budget": 2.5}, "metadata": {"cost-center": "42", "x": "y"}}
    assert team_differences(team, info) == []
    info_changed = {**info, "max_budget": 99.0, "models": [], "metadata": {}}
    found = team_differences(team, info_changed)
    assert len(found) == 3 and any("max_budget is 99.0" in f for f in found)
    assert team_fields(None) == {} and team_differences(None, info) == []


def test_team_metadata_keeps_other_keys() -> None:
    team = TeamSettings(metadata={"cost-center": "42"})
    assert team_metadata({"team_member_budget_id": "b1", "cost-center": "1"}, team) == {
        "team_member_budget_id": "b1", "cost-center": "42"}


def test_durations() -> None:
    assert seconds("720h") == 720 * 3600
    assert seconds("1h30m") == 5400
    assert seconds("2.5s") == 2.5
    assert seconds(None) is None
    with pytest.raises(ValueError):
        seconds("1d")


def test_new_team_fields_and_their_differences() -> None:
    team = TeamSettings(memberBudgetDuration="7d", blocked=True, tags=["a"],
                        objectPermission={"mcpServers": ["m1"], "vectorStores": []})  # type: ignore[arg-type]
    assert team_fields(team) == {"team_member_budget_duration": "7d", "tags": ["a"], "blocked": True,
                                 "object_permission": {"mcp_servers": ["m1"], "vector_stores": []}}
    info = {"blocked": 1, "metadata": {"tags": ["a"]},
            "team_member_budget_table": {"budget_duration": "30d"},
            "object_permission": {"mcp_servers": ["other"], "vector_stores": []}}
    assert team_differences(team, info) == [
        "team_member_budget_duration is '30d', policy says '7d'",
        "blocked is 1, policy says True",
        "object_permission.mcp_servers is ['other'], policy says ['m1']",
    ]
    # A field the proxy refused is reported as refused, not as drift.
    assert team_differences(team, info, skip={"blocked", "team_member_budget_duration", "object_permission"}) == []


def test_admin_groups_and_role_changes() -> None:
    def entry(name: str, display: str) -> GroupEntry:
        return GroupEntry(GroupFacts(name, display), policy="", synced=True)

    groups = [entry("g-admins", "LLM-Admins"), entry("g-eng", "Engineering"), entry("g-ops", "llm-admins-ops")]
    assert admin_groups(TeamSettings(), groups) is None  # roles are left alone
    team = TeamSettings(adminGroups={"displayNamePattern": "llm-admins*"})  # type: ignore[arg-type]
    assert admin_groups(team, groups) == ["g-admins", "g-ops"]
    current = member_roles({"members_with_roles": [{"user_id": "ann", "role": "user"},
                                                   {"user_id": "ben", "role": "admin"},
                                                   {"user_id": "cat", "role": "user"}]})
    # ann joins the admins, ben left them, cat stays a member, dan was just added (as user).
    assert role_changes(["ann", "ben", "cat", "dan"], {"ann", "dan"}, current) == [
        ("ann", "admin"), ("ben", "user"), ("dan", "admin")]


def test_refusal_names_each_refused_part() -> None:
    assert refusal({}) is None
    reason, message = refusal({"role": "team role admin for ann: premium feature"}) or ("", "")
    assert reason == "MemberRoleRefused" and "team role admin for ann" in message
    reason, message = refusal({"tags": "Enterprise only", "role": "team role admin for ann: no"}) or ("", "")
    assert reason == "PolicyFieldRefused" and "tags: Enterprise only" in message and "for ann" in message
