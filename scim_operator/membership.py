"""A group's ScimMemberShards -> its team's members.

Two paths keep members right: the group handler (create/resume/drift, in ``groups``) compares the
whole team with the union of the shards (level-based, used after restarts), and the shard handler
here applies only the difference between a shard's previous and new member list, so one member
added to a 50,000-member group costs one LiteLLM call. Also here: users that became usable joining
in batches, verification of teams after failed calls, the group's status from what was applied,
and users' group counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from scim_contract import GROUP, USER
from scim_operator import keys, metrics, policies
from scim_operator.context import Operator, failure_reason
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import (
    failed_status,
    membership_differences,
    now,
    set_condition,
    team_members,
)
from scim_operator.resources import emit, ref
from scim_operator.secrets_api import KeyDeliveryError
from scim_operator.state import View

log = logging.getLogger(__name__)


def names(ids: list[str], display: dict[str, str], limit: int = 10) -> str:
    shown = ", ".join(display.get(i, i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


async def add_members(op: Operator, team_id: str, user_ids: list[str] | Callable[[], list[str]]) -> None:
    """Adds through the client (batches, splitting, see ``LiteLLM.member_add``); a team whose call
    failed in a way LiteLLM may have half-applied is marked for verification."""
    try:
        uncertain = await op.litellm.member_add(team_id, user_ids)
    except LiteLLMError as exc:
        if exc.transient:
            op.memory.members.suspect_teams.add(team_id)
        raise
    if uncertain:
        op.memory.members.suspect_teams.add(team_id)


async def remove_members(op: Operator, team_id: str, user_ids: list[str]) -> None:
    try:
        await asyncio.gather(*(op.litellm.member_delete(team_id, uid) for uid in user_ids))
    except LiteLLMError as exc:
        if exc.transient:
            op.memory.members.suspect_teams.add(team_id)
        raise


# After a membership call failed with a 5xx or no answer, LiteLLM may still finish it later, or may
# have lost part of a list (seen under load: members missing although a later call succeeded). Such a
# team is compared with /team/info once things are quiet, until a comparison finds nothing to fix.
VERIFY_AFTER = 5.0


def verify_soon(op: Operator, view: View, group: str, team_id: str) -> None:
    if team_id not in op.memory.members.suspect_teams or group in op.memory.members.verify_tasks:
        return
    task = asyncio.create_task(_verify(op, view, group, team_id))
    op.memory.members.verify_tasks[group] = task


async def _verify(op: Operator, view: View, group: str, team_id: str) -> None:
    try:
        while team_id in op.memory.members.suspect_teams:
            await asyncio.sleep(VERIFY_AFTER)
            async with op.memory.lock("group", group):
                if op.memory.teams.ids.get(group) != team_id:
                    return
                op.memory.members.suspect_teams.discard(team_id)
                try:
                    adds, removes = await compare_members(op, view, group, team_id)
                except LiteLLMError:
                    op.memory.members.suspect_teams.add(team_id)
                    continue
                if not (adds or removes):
                    continue
                log.warning(
                    "membership repaired after LiteLLM failures",
                    extra={"fields": {"team": team_id, "added": len(adds), "removed": len(removes)}},
                )
                target = await op.resources.update_status(GROUP, group, ok_status(team_id, view, group))
            if target is not None:
                gref = ref(GROUP, op.namespace, group, target["metadata"].get("uid"))
                emit(
                    gref,
                    "MembersRepaired",
                    f"re-applied {len(adds)} addition(s) and {len(removes)} removal(s) "
                    f"LiteLLM had not kept after failed calls to team {team_id}",
                    warning=True,
                )
    finally:
        op.memory.members.verify_tasks.pop(group, None)


def record_applied(op: Operator, group: str, shards: list[Any], desired: dict[str, str]) -> None:
    """Record what a whole-team comparison applied: each shard's users as of the comparison, and
    the members LiteLLM now has (for status only)."""
    for shard, users, _nested in shards:
        op.memory.members.applied_shards[shard] = frozenset(users)
    op.memory.members.in_team[group] = set(desired)


async def compare_members(op: Operator, view: View, group: str, team_id: str) -> tuple[list[str], list[str]]:
    """Make the team's members exactly the group's usable members, from a fresh /team/info.

    Used after a failed membership call: a call that timed out may still have been applied (or be
    in flight), so retrying the same difference blindly could race it; comparing again cannot."""
    info = await op.litellm.team_info(team_id)
    if info is None:
        raise LiteLLMError(404, f"LiteLLM team {team_id} does not exist", endpoint="/team/info")
    desired = view.desired_members(group)
    shards = list(view.shards.get(group) or ())
    adds, removes = membership_differences(desired, team_members(info))
    await add_members(op, team_id, adds)
    await remove_members(op, team_id, removes)
    record_applied(op, group, shards, desired)
    op.memory.members.pending_joins.pop(group, None)
    return adds, removes


def status_ok(
    st: dict[str, Any], obj: dict[str, Any], team_id: str, view: View, name: str
) -> dict[str, Any]:
    gen = obj["metadata"].get("generation")
    _, listed = view.group_member_ids(name)
    # What LiteLLM was told and acknowledged, not what is desired: a pending difference must not
    # look applied.
    members = len(view.memory.members.in_team.get(name, ()))
    # Part of the policy refused by LiteLLM: not synced, though the team is usable (Ready).
    reason, message = policies.refusal(view.memory.teams.refused.get(name, {})) or (
        "Synced", f"LiteLLM team {team_id} matches this group")
    conds = set_condition(st.get("conditions"), "Synced", reason == "Synced", reason, message, gen)
    conds = set_condition(
        conds, "Ready", True, "TeamReady", f"LiteLLM team {team_id} has {members} member(s)", gen
    )
    if not any(c.get("type") == "Drifted" for c in conds):
        conds = set_condition(conds, "Drifted", False, "InSync", "no drift found", gen)
    return {
        **st,
        "observedGeneration": gen,
        "lastSyncTime": now(),
        "members": listed,
        "litellm": {"teamId": team_id, "members": members},
        "policy": view.memory.teams.policies.get(name, ("", 0))[0],
        "keys": keys.status_of(view.memory, name),
        "conditions": keys.keys_condition(view.memory, name, conds, gen),
    }


def ok_status(team_id: str, view: View, name: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    return lambda st, obj: status_ok(st, obj, team_id, view, name)


async def shard_changed(op: Operator, view: View, event_type: str | None, body: Any) -> None:
    """A ScimMemberShard was listed, added, modified or deleted: apply its difference to the team.

    Retries (with backoff) until LiteLLM accepts, so a difference is never dropped; meanwhile Kopf
    coalesces further events of this shard, and the retry applies the newest content."""
    shard = body["metadata"]["name"]
    spec = body.get("spec") or {}
    group = str(spec.get("group") or "")
    if not group:
        return
    if event_type is None:
        # Initial listing at start-up: the group's resume handler compares the whole team.
        op.memory.members.applied_shards.setdefault(shard, frozenset(spec.get("users") or ()))
        return
    attempt = 0
    while True:
        async with op.memory.lock("group", group):
            fresh = body.get("spec") or {}
            users = frozenset() if event_type == "DELETED" else frozenset(fresh.get("users") or ())
            team_id = op.memory.teams.ids.get(group)
            old = op.memory.members.applied_shards.get(shard, frozenset())
            if team_id is None:
                # The group's own handler will compare the whole team once the team exists.
                op.memory.members.applied_shards[shard] = users
                count_groups_later(op, view, sorted(users ^ old))
                return
            ids = op.memory.users.id_of
            display = {ids(n): view.display(n) for n in users | old}
            adds = [ids(n) for n in sorted(users - old) if view.user_ready(n)]
            removes = [
                ids(n)
                for n in sorted(old - users)
                if n in op.memory.users.ready or view.user_exists(n)
            ]
            try:
                if attempt:
                    adds, removes = await compare_members(op, view, group, team_id)
                else:
                    await add_members(op, team_id, adds)
                    await remove_members(op, team_id, removes)
            except LiteLLMError as exc:
                metrics.FAILURES.labels("membership", failure_reason(exc)).inc()
                await op.resources.update_status(GROUP, group, failed_status(failure_reason(exc), str(exc)))
                attempt += 1
                delay = min(30.0, 0.5 * 2 ** min(attempt, 6))
                log.warning(
                    "membership change not applied yet; retrying",
                    extra={"fields": {"group": group, "shard": shard, "error": str(exc), "delay": delay}},
                )
            else:
                op.memory.members.applied_shards[shard] = users
                if not attempt:
                    op.memory.members.in_team.setdefault(group, set()).update(adds)
                    op.memory.members.in_team[group].difference_update(removes)
                key_events = await _member_keys(op, view, group, team_id, users ^ old)
                if adds or removes or key_events:
                    count_groups_later(op, view, sorted(users ^ old))
                    target = await op.resources.update_status(GROUP, group, ok_status(team_id, view, group))
                    metrics.RECONCILES.labels("membership", "ok").inc()
                    if target is not None:
                        gref = ref(GROUP, op.namespace, group, target["metadata"].get("uid"))
                        if adds:
                            emit(
                                gref,
                                "MembersAdded",
                                f"added {len(adds)} member(s) to team {team_id}: {names(adds, display)}",
                            )
                        if removes:
                            emit(
                                gref,
                                "MembersRemoved",
                                f"removed {len(removes)} member(s) from team {team_id}: "
                                f"{names(removes, display)}",
                            )
                        for reason, message in key_events:
                            emit(gref, reason, message)
                verify_soon(op, view, group, team_id)
                return
        verify_soon(op, view, group, team_id)
        await asyncio.sleep(delay)


async def _member_keys(
    op: Operator, view: View, group: str, team_id: str, changed: frozenset[str]
) -> list[tuple[str, str]]:
    """Personal keys follow membership: issued on join, revoked on leave. A failure here is
    logged and left to the group's next reconcile or drift check (the membership itself is done)."""
    if not changed:
        return []
    fresh = await op.resources.get(GROUP, group)
    if fresh is None:
        return []
    policy = view.policy_of(group, dict(fresh.get("spec") or {}))
    try:
        return await keys.sync_group(op, view, group, team_id, policy, only=set(changed))
    except (LiteLLMError, KeyDeliveryError) as exc:
        log.warning("member keys not updated yet", extra={"fields": {"group": group, "error": str(exc)}})
        return [("KeysFailed", f"member keys not updated yet: {exc}")]


# Users that become usable while their groups' teams already exist join in batches: a burst of
# new users (initial provisioning) costs one /team/member_add per team, not one per membership.
JOIN_WINDOW = 0.1


def join_later(op: Operator, view: View, group: str, team_id: str, user_id: str) -> None:
    pending = op.memory.members.pending_joins.setdefault(group, set())
    pending.add(user_id)
    if group not in op.memory.members.join_tasks:
        task = asyncio.create_task(_flush_joins(op, view, group, team_id))
        op.memory.members.join_tasks[group] = task


async def _flush_joins(op: Operator, view: View, group: str, team_id: str) -> None:
    attempt = 0
    try:
        while True:
            await asyncio.sleep(JOIN_WINDOW if attempt == 0 else min(30.0, 0.5 * 2 ** min(attempt, 6)))
            async with op.memory.lock("group", group):
                if not op.memory.members.pending_joins.get(group) or op.memory.teams.ids.get(group) != team_id:
                    return  # nothing left, or the group was deleted meanwhile
                batch: list[str] = []

                def take(batch: list[str] = batch) -> list[str]:
                    # Taken when LiteLLM can take the call: joins that arrive while it queues go in too.
                    batch[:] = sorted(op.memory.members.pending_joins.pop(group, set()))
                    return batch

                try:
                    if attempt:
                        batch, _ = await compare_members(op, view, group, team_id)
                    else:
                        await add_members(op, team_id, take)
                        op.memory.members.in_team.setdefault(group, set()).update(batch)
                except LiteLLMError as exc:
                    op.memory.members.pending_joins.setdefault(group, set()).update(batch)
                    attempt += 1
                    metrics.FAILURES.labels("membership", failure_reason(exc)).inc()
                    log.warning(
                        "members not joined yet; retrying",
                        extra={"fields": {"group": group, "members": len(batch), "error": str(exc)}},
                    )
                    await op.resources.update_status(GROUP, group, failed_status(failure_reason(exc), str(exc)))
                    verify_soon(op, view, group, team_id)
                    continue
                if not batch and not attempt:
                    continue  # the group's own reconcile took these members into its call
                attempt = 0
                verify_soon(op, view, group, team_id)
                target = await op.resources.update_status(GROUP, group, ok_status(team_id, view, group))
            if target is not None and batch:
                gref = ref(GROUP, op.namespace, group, target["metadata"].get("uid"))
                emit(
                    gref,
                    "MembersAdded",
                    f"added {len(batch)} member(s) to team {team_id}: "
                    f"{names(batch, {u: view.display(u) for u in batch})}",
                )
    finally:
        op.memory.members.join_tasks.pop(group, None)


# A burst of group changes (initial provisioning: every user lands in several groups) refreshes each
# user's count once per window, not once per group.
RECOUNT_WINDOW = 1.0


def count_groups_later(op: Operator, view: View, names: list[str]) -> None:
    """Refresh status.groups of users whose memberships changed, off the membership path."""
    op.memory.members.recount_users.update(names)
    if op.memory.members.recount_task is None or op.memory.members.recount_task.done():
        op.memory.members.recount_task = asyncio.create_task(_recount(op, view))


async def _recount(op: Operator, view: View) -> None:
    while op.memory.members.recount_users:
        await asyncio.sleep(RECOUNT_WINDOW)
        batch = sorted(op.memory.members.recount_users)
        op.memory.members.recount_users.clear()
        for name in batch:
            # A user not synced yet counts its groups in its own first status write.
            if not view.user_exists(name) or not view.user_ready(name):
                continue
            try:
                async with op.memory.lock("user", name):
                    await op.resources.update_status(
                        USER,
                        name,
                        lambda st, _o, n=name: {**st, "groups": len(view.groups_of(n))},  # type: ignore[misc]
                    )
            except Exception as exc:  # a count is cosmetic: the user's next reconcile or drift check fixes it
                log.warning(
                    "group count of ScimUser not refreshed", extra={"fields": {"name": name, "error": str(exc)}}
                )
