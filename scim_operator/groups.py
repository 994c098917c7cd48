"""ScimGroup -> LiteLLM team: ensure it (create, adopt, settings of the policy in force), move it when
its team id changes, delete or keep it, and find drift. The group handler also compares the whole
team with the union of the shards (level-based, used after restarts) through ``membership``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from scim_contract import GROUP, ScimGroupSpec, TeamSettings
from scim_operator import context, keys, membership, metrics, policies
from scim_operator.context import NotOwned, Operator, failure_reason, reconcile_failed, retry_later
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import (
    drift_condition,
    membership_differences,
    merged_metadata,
    owner_value,
    ownership,
    team_id_for,
    team_members,
)
from scim_operator.policies import Policy
from scim_operator.resources import emit
from scim_operator.state import View
from scim_operator.team_reads import TeamListing

log = logging.getLogger(__name__)

@dataclass
class Outcome:
    team_id: str
    members: int
    events: list[tuple[str, str]] = field(default_factory=list)
    policy: Policy | None = None
    # What LiteLLM refused of the policy: LiteLLM field (or "role") -> its answer.
    refused: dict[str, str] = field(default_factory=dict)


def _spec(body: Any) -> ScimGroupSpec:
    try:
        return ScimGroupSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid ScimGroup spec: {exc.errors()[0]['msg']}") from None


def team_id_of(op: Operator, policy: Policy | None, name: str, spec: ScimGroupSpec) -> str:
    """The group's team id: the strategy of the policy in force, else the operator's default."""
    strategy = (policy.spec.teamIdStrategy if policy else None) or op.settings.team_id_strategy
    return team_id_for(name, spec, strategy)


def _team_body(
    op: Operator, name: str, spec: ScimGroupSpec, team_id: str, team: TeamSettings | None, metadata: Any
) -> dict[str, Any]:
    """The /team/new and /team/update request: the policy's settings, the alias, and the current
    metadata with the policy's and the ownership tag merged in."""
    return {
        **policies.team_fields(team),
        "team_id": team_id,
        "team_alias": spec.displayName,
        "metadata": merged_metadata(
            policies.team_metadata(metadata, team), op.settings.owner_tag, op.namespace, name
        ),
    }


async def _write_team(
    op: Operator, write: Callable[[dict[str, Any]], Awaitable[None]], body: dict[str, Any], out: Outcome
) -> None:
    """One /team/new or /team/update with the policy's settings. When LiteLLM refuses it for good
    (not a passing failure), the team is written without the policy's fields and each of those is
    then sent alone: what the proxy refuses (Enterprise-only fields on the open-source proxy, whose
    answer does not always name the field) lands in ``out.refused``, and the rest of the team still
    converges instead of the whole group failing until someone edits the policy."""
    asked = [f for f in policies.TEAM_FIELD_NAMES if f in body]
    try:
        await write(body)
        return
    except LiteLLMError as exc:
        if exc.transient or exc.status == 401 or not asked or "already exists" in exc.message.lower():
            raise
    await write({k: v for k, v in body.items() if k not in asked})
    for name in asked:
        try:
            await op.litellm.team_update({"team_id": body["team_id"], name: body[name]})
        except LiteLLMError as exc:
            if exc.transient or exc.status == 401:
                raise
            out.refused[name] = exc.message


async def _ensure_team(
    op: Operator, name: str, spec: ScimGroupSpec, team_id: str, out: Outcome, known: bool,
    listing: TeamListing | None = None,
) -> dict[str, Any] | None:
    """The team's current record, or None when it was just created (so it has no members): its
    row from ``listing`` (a restart's paged listing of the teams) when that serves, else /team/info.
    ``known``: the status says the team was created before; a new group goes straight to create."""
    s = op.settings
    team = out.policy.spec.team if out.policy is not None else None
    info = None
    if known and listing is not None and policies.listed_row_suffices(team):
        info = await listing.take(team_id)
    if known and info is None:
        info = await op.litellm.team_info(team_id)
    if info is None:
        try:
            await _write_team(op, op.litellm.team_new, _team_body(op, name, spec, team_id, team, {}), out)
            out.events.append(("Created", f"created LiteLLM team {team_id}"))
            return None
        except LiteLLMError as exc:
            if "already exists" not in exc.message.lower():
                raise
            info = await op.litellm.team_info(team_id)
            if info is None:
                raise
    owner = ownership(info.get("metadata"), s.owner_tag, op.namespace, name)
    if owner == "foreign":
        # Another group's team (two groups whose ids resolve to the same team): never synced into.
        raise NotOwned(
            f"LiteLLM team {team_id} belongs to another resource ({s.owner_tag}="
            f"{(info.get('metadata') or {}).get(s.owner_tag)}); not modified"
        )
    if owner == "untagged" and not s.adopt:
        raise NotOwned(
            f"LiteLLM team {team_id} exists without this resource's ownership tag "
            f"({s.owner_tag}={op.namespace}/{name}); not modified (enable --adopt to take it over)"
        )
    if owner == "untagged" and team_id != name:
        await _refuse_busy_adoption(op, team_id, info)
    settings_differ = policies.team_differences(team, info)
    if info.get("team_alias") != spec.displayName or owner != "owned" or settings_differ:
        body = _team_body(op, name, spec, team_id, team, info.get("metadata"))
        await _write_team(op, op.litellm.team_update, body, out)
        # Only what LiteLLM took: a refused field is reported on its own.
        applied = policies.team_differences(team, info, skip=out.refused)
        changes = list(applied)
        if info.get("team_alias") != spec.displayName:
            changes.insert(0, f"alias {info.get('team_alias')!r} -> {spec.displayName!r}")
        what = "; ".join(changes) if changes or owner == "owned" else "ownership tag added (adopted)"
        if applied and out.policy is not None:
            what += f" (policy {out.policy.name})"
        if changes or owner != "owned":
            out.events.append(("Updated", f"updated LiteLLM team {team_id}: {what}"))
    return info


async def _apply_roles(
    op: Operator, view: View, team_id: str, info: dict[str, Any] | None, desired: dict[str, str], out: Outcome
) -> None:
    """Team roles from the policy's ``team.adminGroups``: its members who are also members of a
    selected group are ``admin``, the others ``user``. The open-source proxy refuses the admin role
    (an Enterprise feature): that is reported on the group, and memberships, settings and keys are
    not held back by it."""
    team = out.policy.spec.team if out.policy is not None else None
    chosen = policies.admin_groups(team, policies.indexed(view.groups))
    if chosen is None:
        return
    admins = {view.memory.users.id_of(u) for g in chosen for u in view.group_member_ids(g)[0]}
    changed: list[str] = []
    for uid, role in policies.role_changes(desired, admins, policies.member_roles(info or {})):
        if role == policies.ADMIN_ROLE and "role" in out.refused:
            continue  # refused once: the proxy refuses every admin role the same way
        try:
            await op.litellm.member_update(team_id, uid, role)
        except LiteLLMError as exc:
            if exc.transient or exc.status == 401:
                raise
            out.refused["role"] = f"team role {role} for {desired[uid]}: {exc.message}"
            continue
        changed.append(f"{desired[uid]} is now {role}")
    if changed:
        out.events.append(("RolesChanged", f"team {team_id}: {membership.names(changed, {})}"))


async def _refuse_busy_adoption(op: Operator, team_id: str, info: dict[str, Any]) -> None:
    """With the externalId strategy the team id is the group's externalId, which any SCIM token
    holder chooses: ``--adopt`` then takes over only a team nobody uses yet (no members, no keys), so
    a token holder cannot name an existing team and inherit its members, keys and budget."""
    members = len(team_members(info))
    keys_held = len(await op.litellm.list_keys(team_id=team_id))
    if members or keys_held:
        raise NotOwned(
            f"LiteLLM team {team_id} exists without an ownership tag and has {members} member(s) and "
            f"{keys_held} key(s); a team named by externalId is adopted only while it has neither"
        )


async def _leave_team(op: Operator, view: View, name: str, old: str, policy: Policy | None) -> list[str]:
    """The group's team id changed (its externalId under the externalId strategy, or the policy's
    strategy): take what the operator gave the group in the old team out of it. Keys tagged for
    this group are deleted there (the group's Secrets get keys of the new team in the same sync);
    the old team is deleted if this group owns it and the deletion policy says so, else this
    group's members leave it. Returns what was done, for the Event."""
    done: list[str] = []
    tag = owner_value(op.namespace, name)
    stale = [str(k["token"]) for k in await op.litellm.list_keys(team_id=old, urgent=True)
             if isinstance(k.get("metadata"), dict) and k["metadata"].get(op.settings.owner_tag) == tag
             and k.get("token")]
    await op.litellm.key_delete(stale)
    if stale:
        done.append(f"revoked {len(stale)} key(s) issued in it")
    info = await op.litellm.team_info(old)
    if info is None or ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name) != "owned":
        return done  # gone already, or never this group's: its members were not ours to add
    if ((policy.spec.deletionPolicy if policy else None) or op.settings.deletion_policy) == "delete":
        await op.litellm.team_delete(old)
        return [*done, "deleted it"]
    users, _ = view.group_member_ids(name)
    ours = {view.memory.users.id_of(u) for u in users} | view.memory.members.in_team.get(name, set())
    leaving = sorted(set(team_members(info)) & ours)
    await membership.remove_members(op, old, leaving)
    return [*done, f"removed {len(leaving)} member(s) from it, kept it (deletion policy 'keep')"]


async def apply_group(
    op: Operator, view: View, name: str, spec: ScimGroupSpec, known: bool = True, previous: str | None = None,
    listing: TeamListing | None = None,
) -> Outcome:
    """``previous``: the team id the group's status names, if any (what a changed id moves away from)."""
    policy = view.policy_of(name, spec.model_dump())
    team_id = team_id_of(op, policy, name, spec)
    out = Outcome(team_id=team_id, members=0, policy=policy)
    info = await _ensure_team(op, name, spec, team_id, out, known, listing)
    moved = previous is not None and previous != team_id
    if previous is not None and moved:
        done = await _leave_team(op, view, name, previous, policy)
        out.events.append(("TeamChanged", f"team id changed from {previous} to {team_id}"
                                          + (f"; old team: {', '.join(done)}" if done else "")))
    # Mark the team usable, then read the desired members with no await in between: a shard change
    # either sees the team (and applies its own difference) or happened before this read.
    op.memory.teams.ids[name] = team_id
    current = team_members(info) if info is not None else {}
    desired = view.desired_members(name)
    shards = list(view.shards.get(name) or ())
    adds, removes = membership_differences(desired, current)
    if adds:

        def newest_adds() -> list[str]:
            # Read again once a membership slot is free (see add_members). Users that became ready
            # in the meantime were also queued by join_later; this call takes them over.
            nonlocal desired, shards, adds, removes
            desired = view.desired_members(name)
            shards = list(view.shards.get(name) or ())
            adds, removes = membership_differences(desired, current)
            op.memory.members.pending_joins.get(name, set()).difference_update(adds)
            return adds

        await membership.add_members(op, team_id, newest_adds)
    await membership.remove_members(op, team_id, removes)
    membership.record_applied(op, name, shards, desired)
    membership.count_groups_later(op, view, sorted({op.memory.users.name_of(u) for u in {*adds, *removes}}))
    if adds:
        out.events.append(
            ("MembersAdded", f"added {len(adds)} member(s) to team {team_id}: {membership.names(adds, desired)}")
        )
    if removes:
        out.events.append(
            (
                "MembersRemoved",
                f"removed {len(removes)} member(s) from team {team_id}: "
                f"{membership.names(removes, {u: view.display(u) for u in removes})}",
            )
        )
    out.members = len(desired)
    out.events += await keys.sync_group(op, view, name, team_id, policy, reissue=moved)
    await _apply_roles(op, view, team_id, info, desired, out)
    op.memory.teams.policies[name] = policies.version(policy)
    if out.refused:
        op.memory.teams.refused[name] = dict(out.refused)
    else:
        op.memory.teams.refused.pop(name, None)
    return out


async def reconcile(
    op: Operator, view: View, body: Any, retry: int, resumed: bool = False, listing: TeamListing | None = None,
) -> None:
    """The create/update/resume handler of a ScimGroup. ``resumed``: at operator start, where a team
    found as the status records it leaves the status alone (one write per group saved), and its
    first attempt reads the team from ``listing``."""
    name = body["metadata"]["name"]
    spec = _spec(body)
    async with op.memory.lock("group", name):
        if name in op.memory.teams.deleting:
            return  # waited for the lock while the group's deletion ran: recreate nothing
        previous = (body.get("status") or {}).get("litellm", {}).get("teamId")
        listed = listing if resumed and retry == 0 else None
        try:
            out = await apply_group(op, view, name, spec, previous is not None, previous, listed)
        except (NotOwned, LiteLLMError) as exc:
            await reconcile_failed(op, GROUP, "group", body, exc, retry)
            return
        finally:
            # The team the membership calls went to: the policy's id strategy counts here too.
            membership.verify_soon(op, view, name, team_id_of(op, view.policy_of(name, spec.model_dump()), name, spec))
        def change(st: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
            new = membership.status_ok(st, o, out.team_id, view, name)
            if resumed and not out.events and {**new, "lastSyncTime": st.get("lastSyncTime")} == st:
                return st  # the restart found nothing to change: nothing to write
            return new

        await op.resources.update_status(GROUP, name, change)
        metrics.RECONCILES.labels("group", "ok").inc()
        for reason, message in out.events:
            emit(body, reason, message)
        refusal = policies.refusal(out.refused)
        if refusal is not None:
            emit(body, *refusal, warning=True)


async def delete(op: Operator, view: View, body: Any, retry: int) -> None:
    name = body["metadata"]["name"]
    team_id = (body.get("status") or {}).get("litellm", {}).get("teamId")
    op.memory.teams.deleting.add(name)
    op.memory.teams.ids.pop(name, None)
    op.memory.members.in_team.pop(name, None)
    spec = dict(body.get("spec") or {})
    policy = view.policy_of(name, spec)
    # The group is gone: so are the keys it gave out, whatever happens to the team. Under the lock,
    # so a key another task issued for the group while holding it is in LiteLLM and revoked too.
    async with op.memory.lock("group", name):
        try:
            left = await keys.revoke_group(op, name, body, policy)
        except LiteLLMError as exc:
            raise retry_later(exc, retry) from None
    for problem in left:
        # Not worth holding the group for: the keys in these Secrets are deleted in LiteLLM already.
        emit(body, problem.reason, f"key Secrets not removed, their keys are deleted in LiteLLM: {problem}",
             warning=True)
    op.memory.teams.policies.pop(name, None)
    op.memory.teams.refused.pop(name, None)
    op.memory.keys.failures.pop(name, None)
    if not team_id:
        return
    if ((policy.spec.deletionPolicy if policy else None) or op.settings.deletion_policy) == "keep":
        emit(body, "TeamKept", f"group deleted; LiteLLM team {team_id} kept (deletion policy 'keep')")
        return
    async with op.memory.lock("group", name):
        try:
            info = await op.litellm.team_info(team_id)
            if info is None:
                return
            owner = ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name)
            if owner != "owned":
                emit(
                    body,
                    "NotOwned",
                    f"LiteLLM team {team_id} is not managed by this group; left as is",
                    warning=True,
                )
                return
            await op.litellm.team_delete(team_id)
        except LiteLLMError as exc:
            metrics.FAILURES.labels("group", failure_reason(exc)).inc()
            raise retry_later(exc, retry) from None
        finally:
            op.memory.forget_lock("group", name)
    emit(body, "Deleted", f"deleted LiteLLM team {team_id}")


def _role_differences(
    view: View, policy: Policy | None, info: dict[str, Any], desired: dict[str, str], current: dict[str, str]
) -> list[str]:
    chosen = policies.admin_groups(policy.spec.team if policy else None, policies.indexed(view.groups))
    if chosen is None:
        return []
    admins = {view.memory.users.id_of(u) for g in chosen for u in view.group_member_ids(g)[0]}
    both = set(desired) & set(current)
    return [f"member {desired[uid]} has team role {policies.member_roles(info).get(uid)!r}, policy says {role!r}"
            for uid, role in policies.role_changes(both, admins, policies.member_roles(info))]


def _team_findings(
    op: Operator, view: View, name: str, spec: ScimGroupSpec, policy: Policy | None, team_id: str,
    info: dict[str, Any] | None,
) -> list[str]:
    """What differs between LiteLLM's team and what the group and its policy want (keys apart)."""
    if info is None:
        return [f"LiteLLM team {team_id} was deleted in LiteLLM"]
    if ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name) != "owned":
        return []
    findings: list[str] = []
    if info.get("team_alias") != spec.displayName:
        findings.append(f"team alias is {info.get('team_alias')!r}, expected {spec.displayName!r}")
    if policies.version(policy) != op.memory.teams.policies.get(name):
        findings.append(f"policy in effect is now {policies.version(policy)[0] or 'none'}")
    refused = op.memory.teams.refused.get(name, {})
    findings += policies.team_differences(policy.spec.team if policy else None, info, skip=refused)
    desired = view.desired_members(name)
    current = team_members(info)
    if "role" not in refused:
        findings += _role_differences(view, policy, info, desired, current)
    missing, extra = membership_differences(desired, current)
    # A change the shard handler is applying (a burst of additions queues them) is not drift: it
    # would cost a confirming read and a correction racing the handler's own call.
    busy = view.unapplied_members(name)
    missing, extra = [m for m in missing if m not in busy], [m for m in extra if m not in busy]
    findings += [f"member {desired[m]} missing from team" for m in missing[:20]]
    findings += [f"member {view.display(m)} in team but not in the group" for m in extra[:20]]
    hidden = len(missing) + len(extra) - min(20, len(missing)) - min(20, len(extra))
    if hidden:
        findings.append(f"and {hidden} more membership difference(s)")
    return findings


async def check_drift(
    op: Operator, view: View, body: Any, listed: Callable[[str], dict[str, Any] | None] | None = None
) -> None:
    """The drift check of a ScimGroup (from the sweep); ``listed(team_id)``: the team's row from the
    sweep's page of teams, if it has one."""
    name = body["metadata"]["name"]
    team_id = (body.get("status") or {}).get("litellm", {}).get("teamId")
    row = listed(team_id) if listed is not None and team_id else None
    if not team_id or name not in op.memory.teams.ids:
        return
    try:
        spec = _spec(body)
    except kopf.PermanentError:
        return
    policy = view.policy_of(name, spec.model_dump())
    drift_policy = (policy.spec.driftPolicy if policy else None) or op.settings.drift_policy
    try:
        # A background read before taking the lock: the group's own reconcile never waits behind it.
        # The team's row when it holds all the comparison reads; a finding is confirmed by /team/info.
        team = policy.spec.team if policy is not None else None
        if policies.listed_row_suffices(team):
            first = row if row is not None else await op.litellm.team_row(team_id, background=True)
        else:
            first = await op.litellm.team_info(team_id, background=True)
    except LiteLLMError as exc:
        await context.drift_check_failed(op, GROUP, name, exc)
        return
    async with op.memory.lock("group", name):
        if name not in op.memory.teams.ids:
            return
        try:
            info, findings = first, _team_findings(op, view, name, spec, policy, team_id, first)
            if findings:  # confirmed by a fresh read: a reconcile may have run since the first one
                info = await op.litellm.team_info(team_id)
                findings = _team_findings(op, view, name, spec, policy, team_id, info)
            owner = ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name) if info else None
            if owner == "owned":
                findings += await keys.drift_of(op, name, policy, repair=drift_policy == "correct")
            out = None
            if findings:
                metrics.DRIFT_FOUND.labels("team").inc(len(findings))
                if drift_policy == "correct":
                    out = await apply_group(op, view, name, spec, previous=team_id)
                    metrics.DRIFT_CORRECTED.labels("team").inc(len(findings))
        except NotOwned:
            return
        except LiteLLMError as exc:
            await context.drift_check_failed(op, GROUP, name, exc)
            return

        def change(st: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
            gen = obj["metadata"].get("generation")
            current = out.team_id if out is not None else team_id
            st = membership.status_ok(st, obj, current, view, name) if (out is not None or not findings) else st
            conds = drift_condition(st.get("conditions"), findings, out is not None, "LiteLLM matches this group", gen)
            return {**st, "conditions": conds}

        await op.resources.update_status(GROUP, name, change)
    context.drift_events(body, findings, f"LiteLLM team {team_id}" if out is not None else None)
