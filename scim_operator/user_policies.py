"""Pure rules of ScimUserPolicy: which policy a user gets, and what it asks of the LiteLLM user.

Selection: a policy's ``selector`` (the group criteria of ``ScimTeamPolicy``) selects the direct
members of the groups it selects; its ``userSelector`` matches the user's stored SCIM attributes,
the enterprise extension's included, case-insensitively (they are ``caseExact: false`` in RFC 7643).
Every criterion set must match (AND); a policy that sets none selects nobody (a policy meant for
everyone says ``default: true``).

Precedence, the team policies' rule: among the policies that select a user, the highest
``priority`` wins; on equal priority the name that sorts first wins. Only when none selects the
user do the ``default: true`` policies compete, by the same rule. The winner gives all of its
settings; settings of several policies are never merged, so what a person gets is always exactly
one policy, named in the user's status.

A role, once a policy set it, stays managed: when no policy applies any more it falls back to
``internal_user`` (LiteLLM's role for an ordinary user), so leaving the admin group never leaves
``proxy_admin`` behind. Budgets, models and limits a policy set are left as they are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scim_contract import ScimUserPolicySpec, UserSettings, fold
from scim_operator.policies import (
    GroupFacts,
    Versioned,
    litellm_fields,
    same_setting,
    selector_selects,
    valid_spec,
)

# The role of a user no policy applies to any more, after one had set its role.
FALLBACK_ROLE = "internal_user"


@dataclass(frozen=True)
class UserPolicy(Versioned):
    spec: ScimUserPolicySpec


def parse_user_policy(name: str, generation: int, spec: Mapping[str, Any]) -> UserPolicy | None:
    parsed = valid_spec(ScimUserPolicySpec, spec)
    return UserPolicy(name, generation, parsed) if parsed is not None else None


@dataclass(frozen=True)
class UserFacts:
    """What a user selector may look at: the user's attributes and the groups it is a member of."""

    name: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[GroupFacts, ...] = ()


def user_attributes(spec: Mapping[str, Any]) -> dict[str, str]:
    """The selectable attributes a ScimUser's spec has (``manager``: the manager's id)."""
    enterprise = spec.get("enterprise") or {}
    found = {k: enterprise.get(k) for k in ("department", "employeeNumber", "costCenter", "organization", "division")}
    found["manager"] = (enterprise.get("manager") or {}).get("value")
    found["userType"] = spec.get("userType")
    found["title"] = spec.get("title")
    return {k: str(v) for k, v in found.items() if v}


def selects(spec: ScimUserPolicySpec, user: UserFacts) -> bool:
    """Whether the policy's selectors (not its ``default`` flag) select the user."""
    criteria = 0
    if spec.selector is not None:
        criteria += 1
        if not any(selector_selects(spec.selector, group) for group in user.groups):
            return False
    wanted = spec.userSelector.matchAttributes if spec.userSelector is not None else None
    if wanted:
        criteria += 1
        for attribute, value in wanted.items():
            have = user.attributes.get(attribute)
            if have is None or fold(have) != fold(value):
                return False
    return criteria > 0


def _order(policy: UserPolicy) -> tuple[int, str]:
    return (-policy.spec.priority, policy.name)


def candidates(policies: Iterable[UserPolicy], user: UserFacts) -> list[UserPolicy]:
    """The policies competing for the user, the winner first: those that select it, else the defaults."""
    every = list(policies)
    chosen = [p for p in every if selects(p.spec, user)] or [p for p in every if p.spec.default]
    return sorted(chosen, key=_order)


def effective(policies: Iterable[UserPolicy], user: UserFacts) -> UserPolicy | None:
    """The one policy in force for ``user`` (see the module docstring for the rule)."""
    return next(iter(candidates(policies, user)), None)


def tied(policies: Iterable[UserPolicy], user: UserFacts) -> list[UserPolicy]:
    """The winner and the policies that lost to it on the name alone (same priority) while asking
    for other settings: a conflict a person should hear about. Empty when there is none."""
    competing = candidates(policies, user)
    if len(competing) < 2:
        return []
    top = competing[0]
    losers = [p for p in competing[1:] if p.spec.priority == top.spec.priority and p.spec.user != top.spec.user]
    return [top, *losers] if losers else []


# ---- the LiteLLM user a policy asks for ------------------------------------------------------
# Policy field -> LiteLLM /user/new and /user/update field.
_USER_FIELDS = {
    "role": "user_role",
    "maxBudget": "max_budget",
    "budgetDuration": "budget_duration",
    "models": "models",
    "tpmLimit": "tpm_limit",
    "rpmLimit": "rpm_limit",
}


def user_fields(settings: UserSettings | None) -> dict[str, Any]:
    return litellm_fields(settings, _USER_FIELDS)


@dataclass(frozen=True)
class Wanted:
    """What the policies ask of one LiteLLM user: the policy in force (empty: none), the LiteLLM
    fields it sets and the role it gives (None: the role is not managed)."""

    policy: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    # The policy's generation: a restart tells from the status whether this very policy was applied.
    generation: int = 0

    @property
    def role(self) -> str | None:
        role = self.fields.get("user_role")
        return str(role) if role is not None else None

    def why(self) -> str:
        return f"ScimUserPolicy {self.policy}" if self.policy else "role fallback: no ScimUserPolicy sets one"


def wanted(policy: UserPolicy | None, previous_role: str | None) -> Wanted:
    """The settings of the policy in force; with none, the fallback role if a policy had set one
    (``previous_role``: the role the user's status records)."""
    fields = user_fields(policy.spec.user) if policy is not None else {}
    if previous_role and "user_role" not in fields:
        # A policy without a role (a default with budgets only) must not keep an admin role either.
        fields["user_role"] = FALLBACK_ROLE
    if policy is None:
        return Wanted("", fields)
    return Wanted(policy.name, fields, policy.version[1])


def differences(want: Wanted, info: Mapping[str, Any]) -> list[str]:
    """What a person should read about a LiteLLM user whose settings differ from its policy."""
    found = []
    for litellm_field, value in want.fields.items():
        have = info.get(litellm_field)
        if not same_setting(value, have):
            found.append(f"{litellm_field} is {have!r}, expected {value!r} ({want.why()})")
    return found


def settings_status(st: Mapping[str, Any], want: Wanted) -> dict[str, Any]:
    """A user's status with the policy in force and the role it set; either absent when none (a
    key left out is removed by the status patch)."""
    managed = {"policy": want.policy or None, "policyGeneration": want.generation or None, "role": want.role}
    return {
        **{k: v for k, v in st.items() if k not in managed},
        **{k: v for k, v in managed.items() if v is not None},
    }


def version(policy: UserPolicy | None) -> tuple[str, int]:
    return policy.version if policy is not None else ("", 0)
