"""What a group's drift check calls drift in its team's membership: differences the shard handler
is still applying are left to it (end to end: ``test_groups``, ``test_restart``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from scim_contract import ScimGroupSpec
from scim_operator import groups
from scim_operator.state import Memory, UserEntry, View

TAG = "owner"


def _setup(shard_users: tuple[str, ...], applied: frozenset[str] | None) -> tuple[Any, View]:
    memory = Memory()
    memory.teams.policies["devs"] = ("", 0)  # reconciled without a policy, none in force now
    if applied is not None:
        memory.members.applied_shards["devs-0"] = applied
    users = {n: [UserEntry(synced=True, user_name=f"{n}@example.com")] for n in ("ann", "bob", "cy", "dee")}
    view = View(memory=memory, users=users, shards={"devs": [("devs-0", shard_users, 0)]}, member_groups={})
    op = SimpleNamespace(settings=SimpleNamespace(owner_tag=TAG), namespace="ns", memory=memory)
    return op, view


def _findings(op: Any, view: View, members: list[str]) -> list[str]:
    info = {"team_alias": "Devs", "metadata": {TAG: "ns/devs"},
            "members_with_roles": [{"user_id": m, "role": "user"} for m in members]}
    spec = ScimGroupSpec.model_validate({"displayName": "Devs"})
    return groups._team_findings(op, view, "devs", spec, None, "team-devs", info)


def test_a_membership_change_being_applied_is_not_drift() -> None:
    # cy joined and bob left the group; the shard handler has not applied that yet (a burst queues it).
    op, view = _setup(("ann", "cy"), applied=frozenset({"ann", "bob"}))
    assert _findings(op, view, ["ann", "bob"]) == []
    # Once applied, the same team is drift: someone changed LiteLLM behind the operator's back.
    op.memory.members.applied_shards["devs-0"] = frozenset({"ann", "cy"})
    assert _findings(op, view, ["ann", "bob"]) == [
        "member cy@example.com missing from team", "member bob@example.com in team but not in the group"]


def test_members_of_a_shard_the_handler_has_not_seen_yet_are_left_to_it() -> None:
    op, view = _setup(("ann", "dee"), applied=None)
    assert _findings(op, view, []) == []
    # Unrelated drift is still found meanwhile.
    assert _findings(op, view, ["zed"]) == ["member zed in team but not in the group"]
