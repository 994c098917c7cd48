"""Pure rules of ScimTeamPolicy: which policy a group gets, and what it asks of the LiteLLM team.

Selection: every criterion a selector sets must match (AND); a selector that sets none selects
nothing (a policy meant for every group says ``default: true`` instead). ``displayNamePattern`` is
a shell-style glob over the whole displayName, case-insensitive like SCIM displayNames.

Precedence: among the policies whose selector matches, the highest ``priority`` wins; on equal
priority, the name that sorts first wins (stable and visible in ``kubectl get stp``). Only when no
selector matches do the ``default: true`` policies compete, by the same rule."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from scim_contract import LabelSelector, PolicySelector, ScimTeamPolicySpec, TeamSettings, fold


@dataclass(frozen=True)
class GroupFacts:
    """What a selector may look at: the group's displayName, externalId and labels."""

    name: str
    display_name: str
    external_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Versioned:
    """A policy object by name and generation (team and user policies alike)."""

    name: str
    generation: int

    @property
    def version(self) -> tuple[str, int]:
        """Identifies what a group or user was reconciled with: changes when the policy or its edit changes."""
        return (self.name, self.generation)


@dataclass(frozen=True)
class Policy(Versioned):
    spec: ScimTeamPolicySpec


Model = TypeVar("Model", bound=BaseModel)


def valid_spec(model: type[Model], spec: Mapping[str, Any]) -> Model | None:
    """None for a spec the CRD schema let through but the model rejects (reported on the policy)."""
    try:
        return model.model_validate(dict(spec))
    except ValidationError:
        return None


def parse_policy(name: str, generation: int, spec: Mapping[str, Any]) -> Policy | None:
    parsed = valid_spec(ScimTeamPolicySpec, spec)
    return Policy(name, generation, parsed) if parsed is not None else None


def _labels_match(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    for key, value in (selector.matchLabels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.matchExpressions or []:
        present = req.key in labels
        values = set(req.values or [])
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def selects(spec: ScimTeamPolicySpec, group: GroupFacts) -> bool:
    """Whether the policy's selector (not its ``default`` flag) selects the group."""
    return selector_selects(spec.selector, group)


def selector_selects(sel: PolicySelector | None, group: GroupFacts) -> bool:
    """Whether a group selector (of a team or a user policy) selects the group."""
    if sel is None:
        return False
    criteria = 0
    if sel.displayNamePattern is not None:
        criteria += 1
        # The endpoint's notion of one name (NFC, case-folded): a group the endpoint would refuse as a
        # duplicate of a selected one must not escape the pattern by typing it decomposed.
        pattern = fnmatch.translate(fold(sel.displayNamePattern))
        if not re.fullmatch(pattern, fold(group.display_name), flags=re.DOTALL):
            return False
    if sel.externalIds is not None:
        criteria += 1
        if group.external_id is None or group.external_id not in sel.externalIds:
            return False
    if sel.labelSelector is not None:
        criteria += 1
        if not _labels_match(sel.labelSelector, group.labels):
            return False
    return criteria > 0


def _winner(candidates: Iterable[Policy]) -> Policy | None:
    return min(candidates, key=lambda p: (-p.spec.priority, p.name), default=None)


def effective(policies: Iterable[Policy], group: GroupFacts) -> Policy | None:
    """The one policy in effect for ``group`` (see the module docstring for the rule)."""
    every = list(policies)
    chosen = _winner(p for p in every if selects(p.spec, group))
    return chosen if chosen is not None else _winner(p for p in every if p.spec.default)


# ---- the LiteLLM team a policy asks for ------------------------------------------------------
# Policy field -> LiteLLM /team/new and /team/update field.
_TEAM_FIELDS = {
    "models": "models",
    "maxBudget": "max_budget",
    "budgetDuration": "budget_duration",
    "tpmLimit": "tpm_limit",
    "rpmLimit": "rpm_limit",
    "maxBudgetPerMember": "team_member_budget",
    "memberBudgetDuration": "team_member_budget_duration",
    "tags": "tags",
    "guardrails": "guardrails",
    "blocked": "blocked",
    "objectPermission": "object_permission",
}
# objectPermission field -> LiteLLM object_permission field.
_PERMISSION_FIELDS = {
    "mcpServers": "mcp_servers",
    "mcpAccessGroups": "mcp_access_groups",
    "vectorStores": "vector_stores",
    "agents": "agents",
    "agentAccessGroups": "agent_access_groups",
}
# The LiteLLM fields a policy may set, in the order its request sends them.
TEAM_FIELD_NAMES = tuple(_TEAM_FIELDS.values())


def _litellm_value(ours: str, value: Any) -> Any:
    if ours == "objectPermission":
        return {theirs: getattr(value, mine) for mine, theirs in _PERMISSION_FIELDS.items()
                if getattr(value, mine) is not None}
    return value


def litellm_fields(settings: BaseModel | None, names: Mapping[str, str]) -> dict[str, Any]:
    """The LiteLLM fields (``names``: policy field -> LiteLLM field) a policy's settings set; unset
    fields are left to LiteLLM (not cleared)."""
    if settings is None:
        return {}
    return {litellm: _litellm_value(ours, getattr(settings, ours))
            for ours, litellm in names.items() if getattr(settings, ours) is not None}


def team_fields(team: TeamSettings | None) -> dict[str, Any]:
    return litellm_fields(team, _TEAM_FIELDS)


def _source(litellm_field: str) -> str:
    """The key of a team record ``_current`` reads a setting from."""
    if litellm_field in ("team_member_budget", "team_member_budget_duration"):
        return "team_member_budget_table"
    if litellm_field in ("tags", "guardrails"):
        return "metadata"
    return litellm_field


def _current(info: Mapping[str, Any], litellm_field: str) -> Any:
    held = info.get(_source(litellm_field))
    if litellm_field == "team_member_budget":
        # LiteLLM keeps the member budget in a budget row, shown as team_member_budget_table.
        return held.get("max_budget") if isinstance(held, dict) else None
    if litellm_field == "team_member_budget_duration":
        return held.get("budget_duration") if isinstance(held, dict) else None
    if litellm_field in ("tags", "guardrails"):
        # LiteLLM stores these two in the team's metadata.
        return held.get(litellm_field) if isinstance(held, dict) else None
    return held


# What /team/info joins to a team's row, and a listed row (/v2/team/list) lacks or holds as null.
_JOINED = frozenset({"team_member_budget_table", "object_permission"})


def listed_row_suffices(team: TeamSettings | None) -> bool:
    """Whether a team row from ``/v2/team/list`` holds all a comparison with ``team`` reads."""
    return not any(_source(f) in _JOINED for f in team_fields(team))


def same_setting(want: Any, have: Any) -> bool:
    """A setting's wanted and current LiteLLM value are the same (lists in any order, 1 == 1.0)."""
    if isinstance(want, list):
        return sorted(want) == sorted(have or [])
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, float | int) and isinstance(have, float | int):
        return float(want) == float(have)
    return bool(want == have)


def team_differences(
    team: TeamSettings | None, info: Mapping[str, Any], skip: Iterable[str] = ()
) -> list[str]:
    """What a person should read about a LiteLLM team whose settings differ from its policy.
    ``skip``: LiteLLM fields not compared (ones the proxy refused, reported as such instead)."""
    found = []
    left_out = set(skip)
    for litellm_field, want in team_fields(team).items():
        if litellm_field in left_out:
            continue
        have = _current(info, litellm_field)
        if litellm_field == "object_permission":
            held = have if isinstance(have, dict) else {}
            found += [f"object_permission.{k} is {held.get(k)!r}, policy says {v!r}"
                      for k, v in want.items() if not same_setting(v, held.get(k))]
        elif not same_setting(want, have):
            found.append(f"{litellm_field} is {have!r}, policy says {want!r}")
    raw = info.get("metadata")
    metadata: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    for key, want in ((team.metadata if team else None) or {}).items():
        if metadata.get(key) != want:
            found.append(f"metadata {key} is {metadata.get(key)!r}, policy says {want!r}")
    return found


# ---- team member roles -----------------------------------------------------------------------
# A team member's role in LiteLLM when ``team.adminGroups`` does not make it an admin.
MEMBER_ROLE = "user"
ADMIN_ROLE = "admin"


def admin_groups(team: TeamSettings | None, groups: Iterable[GroupEntry]) -> list[str] | None:
    """The ScimGroups whose members are admins of the team; None when the policy leaves member
    roles alone (no ``adminGroups``)."""
    if team is None or team.adminGroups is None:
        return None
    return sorted(g.facts.name for g in groups if selector_selects(team.adminGroups, g.facts))


def member_roles(info: Mapping[str, Any]) -> dict[str, str]:
    """user_id -> role of a team's members, from ``/team/info``."""
    roles: dict[str, str] = {}
    for member in info.get("members_with_roles") or []:
        if isinstance(member, dict) and member.get("user_id"):
            roles[str(member["user_id"])] = str(member.get("role") or MEMBER_ROLE)
    return roles


def role_changes(members: Iterable[str], admins: set[str], current: Mapping[str, str]) -> list[tuple[str, str]]:
    """(user_id, role) for each of the group's members whose role differs from what the policy
    gives it: ``admin`` for those in ``admins``, ``user`` for the others. ``current`` lacks members
    just added (they joined as ``user``)."""
    changes = []
    for uid in sorted(members):
        want = ADMIN_ROLE if uid in admins else MEMBER_ROLE
        if current.get(uid, MEMBER_ROLE) != want:
            changes.append((uid, want))
    return changes


def refusal(refused: Mapping[str, str]) -> tuple[str, str] | None:
    """The group's condition reason and message (and Warning Event) for what LiteLLM refused of its
    policy; None when it took everything. ``refused``: LiteLLM field (or ``role``) -> its answer."""
    if not refused:
        return None
    reason = "MemberRoleRefused" if set(refused) == {"role"} else "PolicyFieldRefused"
    parts = [answer if what == "role" else f"{what}: {answer}" for what, answer in sorted(refused.items())]
    return reason, "LiteLLM refused part of the policy (the rest of the team is synced): " + "; ".join(parts)


def team_metadata(current: Any, team: TeamSettings | None) -> dict[str, Any]:
    """LiteLLM replaces metadata on update: keep every key it has, set the policy's."""
    base = dict(current) if isinstance(current, dict) else {}
    base.update((team.metadata if team else None) or {})
    return base


_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")


def seconds(duration: str | None) -> float | None:
    """``"720h"``, ``"1h30m"``, ``"3s"`` -> seconds; None when unset."""
    if not duration:
        return None
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0}
    parts = _GO_PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * unit[u] for n, u in parts)


# ---- the policy of a group, as the operator's indexes see it ---------------------------------
@dataclass(frozen=True)
class GroupEntry:
    """One ScimGroup in the group index: what selectors look at, and what its status reports."""

    facts: GroupFacts
    policy: str
    synced: bool


def group_entry(name: str, spec: Mapping[str, Any], labels: Mapping[str, Any], status: Mapping[str, Any]) -> GroupEntry:
    facts = GroupFacts(
        name=name,
        display_name=str(spec.get("displayName") or ""),
        external_id=spec.get("externalId") or None,
        labels={str(k): str(v) for k, v in labels.items()},
    )
    synced = any(
        c.get("type") == "Synced" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return GroupEntry(facts=facts, policy=str(status.get("policy") or ""), synced=synced)


def indexed(index: Mapping[Any, Any]) -> list[Any]:
    """Every value of a Kopf index (key -> store of values)."""
    return [value for store in index.values() for value in store]


def in_force(
    policy_index: Mapping[Any, Any], group_index: Mapping[Any, Any], name: str,
    spec: Mapping[str, Any] | None = None,
) -> Policy | None:
    """The one lookup of the policy in force for a group. Labels come from the group index; the
    spec fields from ``spec`` when the caller holds the group's body (fresher than the index), else
    from the index. A group neither indexed nor given has no policy."""
    entry = next(iter(group_index.get(name) or ()), None)
    indexed_facts = entry.facts if isinstance(entry, GroupEntry) else None
    if spec is None:
        return effective(indexed(policy_index), indexed_facts) if indexed_facts is not None else None
    facts = GroupFacts(
        name=name,
        display_name=str(spec.get("displayName") or ""),
        external_id=spec.get("externalId"),
        labels=indexed_facts.labels if indexed_facts is not None else {},
    )
    return effective(indexed(policy_index), facts)


def version(policy: Policy | None) -> tuple[str, int]:
    return policy.version if policy is not None else ("", 0)
