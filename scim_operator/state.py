"""What the operator knows in memory: which users and teams are usable in LiteLLM, the shard
contents last applied, and one lock per resource.

Nothing here is authoritative: after a restart it is rebuilt from the resources (Kopf indexes over
ScimUser status and ScimMemberShard specs) and a full compare per group, so losing it loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scim_operator import policies, user_policies
from scim_operator.policies import GroupEntry, GroupFacts, Policy
from scim_operator.user_policies import UserFacts, UserPolicy

Index = Mapping[Any, Any]


@dataclass
class UserEntry:
    """One ScimUser as its index sees it: whether it was synced, and its userName for messages
    (Events are readable by anyone who may read the namespace: members are named by userName or
    SCIM id, never by email)."""

    synced: bool
    user_name: str | None
    active: bool = True
    # What a ScimUserPolicy's userSelector may match (``user_policies.user_attributes``).
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass
class UserState:
    """What ``users`` knows."""

    # ScimUser name -> LiteLLM user_id, set the moment this process created or verified the user.
    ready: dict[str, str] = field(default_factory=dict)
    # ScimUsers being deleted: never add them to a team again.
    deleting: set[str] = field(default_factory=set)
    # ScimUser name -> (ScimUserPolicy name, generation) its LiteLLM user was last reconciled with.
    policies: dict[str, tuple[str, int]] = field(default_factory=dict)
    # The pass that re-reconciles users whose policy in force changed, and whether another is due.
    sweep_task: asyncio.Task[None] | None = None
    sweep_again: bool = False
    # ScimGroup name -> what user selectors last saw of it, to tell its changes from status writes.
    group_facts: dict[str, GroupFacts] = field(default_factory=dict)
    # The last count of users per ScimUserPolicy (``user_policy_sync.Summary``), shared by the
    # status timers of all policies.
    policy_summary: object | None = None
    # ScimUser name -> the LiteLLM user_id its status records, and back. Not the name itself under
    # --user-id-strategy externalId or userName; kept from the index so paths without a View (keys,
    # counts) and a fresh process name the right user before the user's own handler ran.
    ids: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def remember(self, name: str, user_id: str) -> None:
        previous = self.ids.get(name)
        if previous != user_id:
            if previous is not None and self.names.get(previous) == name:
                del self.names[previous]
            self.ids[name] = user_id
            self.names[user_id] = name

    def forget(self, name: str) -> None:
        user_id = self.ids.pop(name, None)
        if user_id is not None and self.names.get(user_id) == name:
            del self.names[user_id]

    def id_of(self, name: str) -> str:
        """The LiteLLM user_id of a ScimUser; its name while nothing else is known (the default
        strategy, and the id a user that never synced is looked for under)."""
        return self.ready.get(name) or self.ids.get(name) or name

    def name_of(self, user_id: str) -> str:
        return self.names.get(user_id, user_id)


@dataclass
class TeamState:
    """What ``groups`` knows of teams."""

    # ScimGroup name -> LiteLLM team_id, set the moment the team is known to exist and be ours.
    ids: dict[str, str] = field(default_factory=dict)
    # ScimGroup name -> (policy name, generation) its team was last reconciled with ("", 0): none.
    policies: dict[str, tuple[str, int]] = field(default_factory=dict)
    # ScimGroup name -> what LiteLLM refused of its policy at the last reconcile: LiteLLM field
    # name (or ``role``, for member roles) -> LiteLLM's answer. Shown as Synced=False and left out
    # of drift checks (retried at the group's next reconcile, not at every drift check).
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    # ScimGroups being deleted, until the API server reports them gone: whatever waited for such a
    # group's lock (a policy's re-reconcile, a key check, a user's keys) does nothing once it has it.
    deleting: set[str] = field(default_factory=set)


@dataclass
class MembershipState:
    """What ``groups`` knows of memberships: what was applied, what waits, what is in doubt."""

    # ScimGroup name -> LiteLLM user_ids LiteLLM acknowledged as team members (for status only).
    in_team: dict[str, set[str]] = field(default_factory=dict)
    # ScimMemberShard name -> the users it listed when its difference was last applied.
    applied_shards: dict[str, frozenset[str]] = field(default_factory=dict)
    # Users waiting to be added to a group's team in the next batch, and the task that adds them.
    pending_joins: dict[str, set[str]] = field(default_factory=dict)
    join_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Teams whose membership calls failed in a way LiteLLM may have half-applied, and their checkers.
    suspect_teams: set[str] = field(default_factory=set)
    verify_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # ScimUsers whose status.groups count is to be refreshed, and the one task that does it.
    recount_users: set[str] = field(default_factory=set)
    recount_task: asyncio.Task[None] | None = None


@dataclass
class KeyState:
    """What ``keys`` knows."""

    # ScimGroup name -> (namespace, name) of the key Secrets delivered for it.
    delivered: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    # ScimGroup name -> (condition reason, message): why some of its keys could not be delivered at
    # the last sync.
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    # ScimGroup name -> key Secrets whose key drifted in LiteLLM and gets replaced at the next sync.
    repairs: dict[str, set[str]] = field(default_factory=dict)
    # Fire-and-forget deletions, referenced so they are not garbage-collected mid-flight.
    background: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass
class Memory:
    """Each reconciler's own small state, and one lock per resource shared by all of them."""

    users: UserState = field(default_factory=UserState)
    teams: TeamState = field(default_factory=TeamState)
    members: MembershipState = field(default_factory=MembershipState)
    keys: KeyState = field(default_factory=KeyState)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, kind: str, name: str) -> asyncio.Lock:
        """Serialises everything the operator does for one resource (handler, drift check, shards)."""
        return self._locks.setdefault(f"{kind}/{name}", asyncio.Lock())

    def forget_lock(self, kind: str, name: str) -> None:
        self._locks.pop(f"{kind}/{name}", None)


@dataclass
class View:
    """Desired memberships, read from the Kopf indexes plus what this process did since they were
    last updated. ``users``: ScimUser name -> UserEntry; ``shards``: group -> (shard, users);
    ``member_groups``: ScimUser name -> group names."""

    memory: Memory
    users: Index
    shards: Index
    member_groups: Index
    # ScimTeamPolicy name -> Policy; ScimGroup name -> GroupEntry (see ``policies``).
    policies: Index = field(default_factory=dict)
    groups: Index = field(default_factory=dict)
    # ScimUserPolicy name -> UserPolicy (see ``user_policies``).
    user_policies: Index = field(default_factory=dict)

    def _entry(self, name: str) -> UserEntry | None:
        store = self.users.get(name)
        return next(iter(store), None) if store is not None else None

    def user_ready(self, name: str) -> bool:
        if name in self.memory.users.deleting:
            return False
        if name in self.memory.users.ready:
            return True
        entry = self._entry(name)
        return entry is not None and entry.synced

    def user_active(self, name: str) -> bool:
        entry = self._entry(name)
        return entry is not None and entry.active and self.user_ready(name)

    def user_exists(self, name: str) -> bool:
        return self.users.get(name) is not None

    def display(self, name: str) -> str:
        entry = self._entry(name)
        return entry.user_name if entry is not None and entry.user_name else name

    def group_member_ids(self, group: str) -> tuple[set[str], int]:
        """(every user id listed in the group's shards, number of users + nested groups listed)."""
        users: set[str] = set()
        total = 0
        for _shard, shard_users, nested in self.shards.get(group) or ():
            users.update(shard_users)
            total += len(shard_users) + nested
        return users, total

    def desired_members(self, group: str) -> dict[str, str]:
        """LiteLLM user_id -> display for the group's members that are usable LiteLLM users."""
        ids, _ = self.group_member_ids(group)
        return {self.memory.users.id_of(n): self.display(n) for n in ids if self.user_ready(n)}

    def unapplied_members(self, group: str) -> set[str]:
        """LiteLLM user_ids whose joining or leaving the group's team the shard handler has not
        applied yet (a shard changed since it last applied it, or it has not seen the shard yet)."""
        out: set[str] = set()
        for shard, shard_users, _nested in self.shards.get(group) or ():
            applied = self.memory.members.applied_shards.get(shard)
            changed = set(shard_users) if applied is None else set(shard_users) ^ applied
            out.update(self.memory.users.id_of(n) for n in changed)
        return out

    def groups_of(self, name: str) -> list[str]:
        return sorted(set(self.member_groups.get(name) or ()))

    def policy_of(self, group: str, spec: Mapping[str, Any] | None = None) -> Policy | None:
        """The policy in force for a group (see ``policies.in_force``); ``spec``: the group's spec
        when the caller holds its body."""
        return policies.in_force(self.policies, self.groups, group, spec)

    def user_facts(self, name: str, spec: Mapping[str, Any] | None = None) -> UserFacts:
        """What user selectors see of a user: its attributes (from ``spec`` when the caller holds
        the user's body, fresher than the index) and the groups that list it directly."""
        entry = self._entry(name)
        if spec is not None:
            attributes: Mapping[str, str] = user_policies.user_attributes(spec)
        else:
            attributes = entry.attributes if entry is not None else {}
        groups = []
        for group in self.groups_of(name):
            found = next(iter(self.groups.get(group) or ()), None)
            if isinstance(found, GroupEntry):
                groups.append(found.facts)
        return UserFacts(name, attributes, tuple(groups))

    def user_policy_of(self, name: str, spec: Mapping[str, Any] | None = None) -> UserPolicy | None:
        """The ScimUserPolicy in force for a user (see ``user_policies.effective``)."""
        every = policies.indexed(self.user_policies)
        if not every:
            return None
        return user_policies.effective(every, self.user_facts(name, spec))

