"""Which ScimUserPolicy a user gets, and what it asks of the LiteLLM user (pure rules)."""

from __future__ import annotations

from typing import Any

from scim_operator.policies import GroupFacts
from scim_operator.user_policies import (
    UserFacts,
    UserPolicy,
    effective,
    parse_user_policy,
    tied,
    user_attributes,
    wanted,
)

ADMINS = GroupFacts("g1", "LLM Admins", "ext-admins", {"tier": "gold"})
SALES_SPEC = {"userName": "carol", "title": "Rep",
              "enterprise": {"department": "Sales", "manager": {"value": "m-1", "displayName": "Boss"}}}
CAROL = UserFacts("u1", user_attributes(SALES_SPEC), (ADMINS,))


def policy(name: str, **spec: Any) -> UserPolicy:
    parsed = parse_user_policy(name, 1, spec)
    assert parsed is not None
    return parsed


def test_attributes_include_the_enterprise_extension() -> None:
    assert user_attributes(SALES_SPEC) == {"department": "Sales", "manager": "m-1", "title": "Rep"}


def test_group_and_attribute_criteria_must_all_match() -> None:
    both = policy("both", selector={"displayNamePattern": "llm admins"},
                  userSelector={"matchAttributes": {"department": "SALES", "manager": "m-1"}})
    wrong_dept = policy("dept", selector={"displayNamePattern": "llm admins"},
                        userSelector={"matchAttributes": {"department": "Engineering"}})
    not_member = UserFacts("u2", CAROL.attributes, ())
    assert effective([both], CAROL) == both
    assert effective([wrong_dept], CAROL) is None
    assert effective([both], not_member) is None
    assert effective([policy("empty", selector={})], CAROL) is None  # no criterion: nobody


def test_priority_then_name_and_defaults_only_when_nothing_selects() -> None:
    low = policy("a-low", selector={"labelSelector": {"matchLabels": {"tier": "gold"}}}, priority=1)
    high = policy("z-high", userSelector={"matchAttributes": {"department": "sales"}}, priority=10)
    fallback = policy("everyone", default=True, priority=100)
    assert effective([low, high, fallback], CAROL) == high
    assert effective([fallback], CAROL) == fallback
    assert effective([fallback, policy("other", selector={"externalIds": ["x"]})], CAROL) == fallback


def test_a_tie_with_other_settings_is_reported_and_won_by_the_first_name() -> None:
    b = policy("b", userSelector={"matchAttributes": {"department": "sales"}}, user={"role": "proxy_admin"})
    a = policy("a", userSelector={"matchAttributes": {"department": "sales"}}, user={"role": "internal_user"})
    same = policy("c", userSelector={"matchAttributes": {"department": "sales"}}, user={"role": "internal_user"})
    assert effective([b, a], CAROL) == a
    assert [p.name for p in tied([b, a, same], CAROL)] == ["a", "b"]  # c asks for the same: no conflict
    assert tied([a, same], CAROL) == []


def test_a_role_once_managed_falls_back_when_no_policy_sets_one() -> None:
    admin = policy("admins", selector={"externalIds": ["ext-admins"]}, user={"role": "proxy_admin", "maxBudget": 9})
    budget_only = policy("budget", default=True, user={"maxBudget": 1})
    assert wanted(admin, None).fields == {"user_role": "proxy_admin", "max_budget": 9}
    assert wanted(budget_only, "proxy_admin").fields == {"max_budget": 1, "user_role": "internal_user"}
    assert wanted(None, "proxy_admin").fields == {"user_role": "internal_user"}
    assert wanted(None, None).fields == {}  # never managed: left alone


def test_invalid_specs_are_rejected() -> None:
    assert parse_user_policy("bad", 1, {"user": {"role": "root"}}) is None
    assert parse_user_policy("bad", 1, {"userSelector": {"matchAttributes": {"shoeSize": "9"}}}) is None
    assert parse_user_policy("bad", 1, {"user": {"tpmLimit": -1}}) is None
