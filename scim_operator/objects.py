"""Pure functions: the LiteLLM objects a custom resource should become, ids, ownership, conditions.

Nothing here performs I/O, so every rule (which id, which tag, what counts as drift, when a
condition's transition time moves) is testable without a proxy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scim_common import clock
from scim_contract import ScimGroupSpec, ScimUserSpec
from scim_operator import identity
from scim_operator.user_policies import Wanted, differences


def now() -> str:
    return clock.rfc3339()


# ---- identities ------------------------------------------------------------------------------
def user_id_for(name: str) -> str:
    """LiteLLM ``user_id`` of a ScimUser: its name, which is the SCIM ``id`` (stable for the user's
    life, unlike userName or email, which the IdP may change)."""
    return name


def team_id_for(name: str, spec: ScimGroupSpec, strategy: str) -> str:
    """LiteLLM ``team_id`` of a ScimGroup: its name (the SCIM ``id``), or with strategy
    ``externalId`` the IdP's own group id, which is what LiteLLM's SSO team sync uses, so both land
    on the same team. A group without externalId falls back to its name."""
    if strategy == "externalId" and spec.externalId:
        return spec.externalId
    return name


# ---- ownership -------------------------------------------------------------------------------
def owner_value(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def ownership(metadata: Any, tag: str, namespace: str, name: str) -> str:
    """``owned`` (our tag, this resource), ``untagged`` (no tag: adoptable) or ``foreign`` (tagged
    for another resource or namespace: never touched)."""
    value = metadata.get(tag) if isinstance(metadata, dict) else None
    if value is None:
        return "untagged"
    return "owned" if value == owner_value(namespace, name) else "foreign"


def tagged_for(metadata: Any, tag: str, namespace: str) -> bool:
    """The ownership tag names a resource of ``namespace``."""
    value = metadata.get(tag) if isinstance(metadata, dict) else None
    return isinstance(value, str) and value.startswith(owner_value(namespace, ""))


def merged_metadata(current: Any, tag: str, namespace: str, name: str) -> dict[str, Any]:
    """LiteLLM replaces ``metadata`` on update: keep every other key, set ours."""
    base = dict(current) if isinstance(current, dict) else {}
    base[tag] = owner_value(namespace, name)
    return base


# ---- users -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesiredUser:
    user_id: str
    email: str | None
    alias: str | None
    active: bool
    # Role, budget, models and limits from the ScimUserPolicy in force (see ``user_policies``).
    settings: Wanted = field(default_factory=Wanted)
    # Only on create: the proxy's /user/update ignores sso_user_id (measured on 1.108.7).
    sso_user_id: str | None = None

    def new_body(self, tag: str, namespace: str, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "metadata": identity.marked(merged_metadata({}, tag, namespace, name), self.active),
            **self.settings.fields,
        }
        if self.email:
            body["user_email"] = self.email
        if self.alias:
            body["user_alias"] = self.alias
        if self.sso_user_id:
            body["sso_user_id"] = self.sso_user_id
        return body


def desired_user(
    name: str, spec: ScimUserSpec, settings: Wanted | None = None, user_id: str | None = None
) -> DesiredUser:
    """``user_id``: the id chosen by the user id strategy (``identity.resolve``); the name by default."""
    return DesiredUser(
        user_id=user_id or user_id_for(name),
        email=spec.primary_email(),
        alias=spec.displayName or None,
        active=spec.active,
        settings=settings or Wanted(),
        sso_user_id=identity.sso_user_id_of(spec),
    )


def user_differences(desired: DesiredUser, info: dict[str, Any]) -> list[str]:
    """What a person should read about a LiteLLM user that does not match its ScimUser."""
    found = []
    if desired.email and (info.get("user_email") or "") != desired.email:
        # Not the addresses themselves: this text goes into Events, which namespace readers see.
        found.append("email differs from the ScimUser's")
    if desired.alias and (info.get("user_alias") or "") != desired.alias:
        found.append(f"alias is {info.get('user_alias')!r}, expected {desired.alias!r}")
    return found + differences(desired.settings, info) + identity.mark_differences(desired.active, info)


# ---- teams -----------------------------------------------------------------------------------
def team_members(info: dict[str, Any]) -> dict[str, str]:
    """user_id -> user_id of a team's members, from ``/team/info``. Not their emails: these names
    end up in Events (callers that know the ScimUser name members by userName instead)."""
    members: dict[str, str] = {}
    for member in info.get("members_with_roles") or []:
        uid = member.get("user_id") if isinstance(member, dict) else None
        if uid:
            members[str(uid)] = str(uid)
    return members


def membership_differences(desired: dict[str, str], current: dict[str, str]) -> tuple[list[str], list[str]]:
    """(user_ids to add, user_ids to remove); ``desired``/``current`` map user_id -> display."""
    return sorted(set(desired) - set(current)), sorted(set(current) - set(desired))


# ---- conditions ------------------------------------------------------------------------------
def set_condition(
    conditions: list[dict[str, Any]] | None,
    ctype: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A new condition list with ``ctype`` set; ``lastTransitionTime`` only moves when the status does."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    result = [dict(c) for c in conditions or [] if c.get("type") != ctype]
    previous = next((c for c in conditions or [] if c.get("type") == ctype), None)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == value else None
    entry: dict[str, Any] = {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message[:32000],
        "lastTransitionTime": transition or now(),
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    result.append(entry)
    order = {"Ready": 0, "Synced": 1, "Drifted": 2}
    return sorted(result, key=lambda c: order.get(str(c.get("type")), 9))


def condition(conditions: list[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == ctype), None)


def drift_condition(
    conditions: list[dict[str, Any]] | None, findings: list[str], corrected: bool, in_sync: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """``Drifted`` after a drift check: False (``Corrected``) when the findings were corrected, True
    with the findings when they were not, and False (``InSync``, message ``in_sync``) when nothing
    was found — unless the last finding was corrected: that stays, being still true and what a
    reader of ``kubectl describe`` wants to know (the next check a second later would otherwise
    erase it), until new drift replaces it."""
    text = "; ".join(findings)
    if not findings:
        previous = next((c for c in conditions or [] if c.get("type") == "Drifted"), None)
        if previous and previous.get("status") == "False" and previous.get("reason") == "Corrected":
            return set_condition(conditions, "Drifted", False, "Corrected", str(previous.get("message", "")),
                                 generation)
        return set_condition(conditions, "Drifted", False, "InSync", in_sync, generation)
    if corrected:
        return set_condition(conditions, "Drifted", False, "Corrected", f"corrected at {now()}: {text}", generation)
    return set_condition(conditions, "Drifted", True, "DriftDetected", text, generation)


def failed_status(reason: str, message: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """A status change: Synced and Ready False, with LiteLLM's own error message."""

    def change(st: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        gen = obj["metadata"].get("generation")
        conds = set_condition(st.get("conditions"), "Synced", False, reason, message, gen)
        conds = set_condition(conds, "Ready", False, reason, message, gen)
        return {**st, "conditions": conds}

    return change
