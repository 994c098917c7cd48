"""ScimUser -> LiteLLM internal user: create/update, key blocking on deactivation, deletion, drift.

Every function is level-based: it reads LiteLLM, compares with the resource and applies only the
difference, so running it again (retry, restart after SIGKILL, drift check) is harmless."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from scim_contract import USER, ScimUserSpec
from scim_operator import context, group_keys, identity, membership, metrics, policies, user_policies
from scim_operator.context import NotOwned, Operator, failure_reason, reconcile_failed, retry_later
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import (
    DesiredUser,
    desired_user,
    drift_condition,
    failed_status,
    merged_metadata,
    now,
    ownership,
    set_condition,
    user_differences,
)
from scim_operator.resources import emit
from scim_operator.state import View
from scim_operator.user_policies import UserPolicy, Wanted

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    user_id: str
    blocked: list[str]
    events: list[tuple[str, str]] = field(default_factory=list)
    settings: Wanted = field(default_factory=Wanted)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # Why the user is kept under an id the user id strategy no longer gives (identity.resolve).
    id_note: str | None = None


def _spec(body: Any) -> ScimUserSpec:
    try:
        return ScimUserSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid ScimUser spec: {exc.errors()[0]['msg']}") from None


def _is_placeholder(info: dict[str, Any]) -> bool:
    """A user LiteLLM made up by itself when a team member was added before the user existed: no
    email, alias or metadata, so there is nobody's data to protect by refusing to manage it."""
    return not info.get("user_email") and not info.get("user_alias") and not info.get("metadata")


async def _ensure_user(op: Operator, name: str, desired: DesiredUser, out: Outcome, known: bool) -> None:
    """``known``: the resource's status says the user was created before; then read first. A new
    resource goes straight to create (one call), and a conflict falls back to reading."""
    s = op.settings
    info = await op.litellm.user_info(desired.user_id) if known else None
    if info is None:
        try:
            await _create(op, name, desired, out)
            given = f" with role {desired.settings.role} ({desired.settings.why()})" if desired.settings.role else ""
            out.events.append(("Created", f"created LiteLLM user {desired.user_id}{given}"))
            return
        except LiteLLMError as exc:
            # A create that landed before a crash or a concurrent retry: verify ownership below.
            if exc.status != 409 or "with email" in exc.message.lower():
                raise
            info = await op.litellm.user_info(desired.user_id)
            if info is None:
                raise
    owner = ownership(info.get("metadata"), s.owner_tag, op.namespace, name)
    if owner == "foreign" or (owner == "untagged" and not s.adopt and not _is_placeholder(info)):
        raise NotOwned(
            f"LiteLLM user {desired.user_id} exists without this resource's ownership tag "
            f"({s.owner_tag}={op.namespace}/{name}); not modified (enable --adopt to take it over)"
        )
    differences = user_differences(desired, info)
    if differences or owner != "owned":
        body: dict[str, Any] = {
            "user_id": desired.user_id,
            "metadata": identity.marked(
                merged_metadata(info.get("metadata"), s.owner_tag, op.namespace, name), desired.active
            ),
        }
        if desired.email:
            body["user_email"] = desired.email
        if desired.alias:
            body["user_alias"] = desired.alias
        body.update(desired.settings.fields)
        await op.litellm.user_update(body)
        what = "; ".join(differences) if differences else "ownership tag added (adopted)"
        out.events.append(("Updated", f"updated LiteLLM user {desired.user_id}: {what}"))
        wanted_role = desired.settings.role
        if wanted_role is not None and info.get("user_role") != wanted_role:
            out.events.append(("RoleChanged", f"LiteLLM role of {desired.user_id} changed from "
                                              f"{info.get('user_role')} to {wanted_role} ({desired.settings.why()})"))


async def _create(op: Operator, name: str, desired: DesiredUser, out: Outcome) -> None:
    """``/user/new``. LiteLLM answers 500 when the sso_user_id (unique there) is another user's: then
    the user is created without it, and a Warning says which user LiteLLM's SSO login finds instead."""
    body = desired.new_body(op.settings.owner_tag, op.namespace, name)
    try:
        await op.litellm.user_new(body)
        return
    except LiteLLMError as exc:
        if exc.status < 500 or not desired.sso_user_id:
            raise
        holder = await op.litellm.user_with_sso_id(desired.sso_user_id)
        if holder is None or holder == desired.user_id:
            raise
    del body["sso_user_id"]
    await op.litellm.user_new(body)
    out.warnings.append((
        "SsoUserIdTaken",
        f"this user's externalId is already the sso_user_id of LiteLLM user {holder}; created "
        f"{desired.user_id} without it (LiteLLM's SSO login resolves that identity to {holder})",
    ))


async def _block_keys(op: Operator, name: str, user_id: str, known: list[str], out: Outcome) -> None:
    keys = await op.litellm.user_keys(user_id)
    to_block = sorted({str(k["token"]) for k in keys if not k.get("blocked") and k.get("token")})
    if not to_block:
        out.blocked = sorted(set(known))
        return
    # Record the intent first: after a crash between block and status write, the reactivation must
    # still know which keys it may unblock.
    recorded = sorted(set(known) | set(to_block))
    await op.resources.update_status(
        USER,
        name,
        lambda st, _o: {
            **st,
            "litellm": {**(st.get("litellm") or {}), "userId": user_id, "blockedKeys": recorded},
        },
    )
    await asyncio.gather(*(op.litellm.key_block(k) for k in to_block))
    out.blocked = recorded
    out.events.append(
        ("KeysBlocked", f"user deactivated: blocked {len(to_block)} LiteLLM key(s) of {user_id}")
    )


async def _unblock_keys(op: Operator, user_id: str, known: list[str], out: Outcome) -> None:
    if known:
        await asyncio.gather(*(op.litellm.key_unblock(k) for k in known))
        out.events.append(
            ("KeysUnblocked", f"user reactivated: unblocked {len(known)} LiteLLM key(s) of {user_id}")
        )
    out.blocked = []


def _policy(view: View, name: str, spec: ScimUserSpec, status: dict[str, Any]) -> tuple[UserPolicy | None, Wanted]:
    """The ScimUserPolicy in force for the user, and what it (or the role fallback) asks for."""
    policy = view.user_policy_of(name, spec.model_dump()) if view.user_policies else None
    return policy, user_policies.wanted(policy, status.get("role"))


async def apply_user(
    op: Operator, view: View, name: str, spec: ScimUserSpec, status: dict[str, Any]
) -> Outcome:
    policy, settings = _policy(view, name, spec, status)
    recorded = (status.get("litellm") or {}).get("userId") or None
    user_id, note = identity.resolve(name, spec, op.settings.user_id_strategy, recorded)
    desired = desired_user(name, spec, settings, user_id)
    known_blocked = list((status.get("litellm") or {}).get("blockedKeys") or [])
    out = Outcome(user_id=desired.user_id, blocked=known_blocked, settings=settings, id_note=note)
    if note is not None:
        out.warnings.append(("UserIdChanged", note))
    previously_ours = recorded is not None
    # Security first: a deactivated user we already manage loses access before anything else.
    blocked_early = False
    if not desired.active and previously_ours:
        await _block_keys(op, name, desired.user_id, known_blocked, out)
        blocked_early = True
    await _ensure_user(op, name, desired, out, known=previously_ours)
    if not desired.active and not blocked_early:
        await _block_keys(op, name, desired.user_id, known_blocked, out)
    elif desired.active:
        await _unblock_keys(op, desired.user_id, known_blocked, out)

    was_ready = view.user_ready(name)
    op.memory.users.remember(name, desired.user_id)
    op.memory.users.ready[name] = desired.user_id
    op.memory.users.policies[name] = user_policies.version(policy)
    if not was_ready:
        # Groups that listed this user before it existed: join their teams now. Reading the index
        # right after marking the user ready (no await in between) leaves no window in which a shard
        # change could see the user as not ready while this read misses the shard.
        for group in view.groups_of(name):
            team_id = op.memory.teams.ids.get(group)
            if team_id is not None:
                membership.join_later(op, view, group, team_id, desired.user_id)
    return out


def _status_ok(
    st: dict[str, Any], obj: dict[str, Any], out: Outcome, view: View, name: str
) -> dict[str, Any]:
    gen = obj["metadata"].get("generation")
    active = bool((obj.get("spec") or {}).get("active", True))
    conds = st.get("conditions")
    if out.id_note is not None:
        conds = set_condition(conds, "Synced", False, "UserIdChanged", out.id_note, gen)
    else:
        conds = set_condition(
            conds, "Synced", True, "Synced", f"LiteLLM user {out.user_id} matches this resource", gen
        )
    if active:
        conds = set_condition(conds, "Ready", True, "Active", f"LiteLLM user {out.user_id} is usable", gen)
    else:
        conds = set_condition(
            conds,
            "Ready",
            True,
            "Deactivated",
            f"user deactivated; {len(out.blocked)} LiteLLM key(s) blocked",
            gen,
        )
    if not any(c.get("type") == "Drifted" for c in conds):
        conds = set_condition(conds, "Drifted", False, "InSync", "no drift found", gen)
    return {
        **user_policies.settings_status(st, out.settings),
        "observedGeneration": gen,
        "lastSyncTime": now(),
        "groups": len(view.groups_of(name)),
        "litellm": {"userId": out.user_id, "blockedKeys": out.blocked},
        "conditions": conds,
    }


def ok_status(out: Outcome, view: View, name: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """The status change of a user whose LiteLLM user now matches (for reconcilers besides this one)."""
    return lambda st, obj: _status_ok(st, obj, out, view, name)


def converged(op: Operator, body: Any) -> str | None:
    """The LiteLLM user id when the status records that this very spec was applied and LiteLLM
    acknowledged it (Synced for the current generation, the spec recorded as handled); else None."""
    status = body.get("status") or {}
    user_id = (status.get("litellm") or {}).get("userId")
    generation = body["metadata"].get("generation")
    synced = next((c for c in status.get("conditions") or () if c.get("type") == "Synced"), None)
    if not user_id or synced is None or synced.get("status") != "True":
        return None
    if synced.get("observedGeneration") != generation or status.get("observedGeneration") != generation:
        return None
    return str(user_id) if op.diffbase.is_handled(body) else None


def _id_note(op: Operator, name: str, body: Any, user_id: str) -> str | None:
    try:
        spec = _spec(body)
    except kopf.PermanentError:
        return "invalid spec"
    return identity.resolve(name, spec, op.settings.user_id_strategy, user_id)[1]


def _policy_applied(view: View, name: str, body: Any) -> tuple[str, int] | None:
    """The version of the ScimUserPolicy in force when the status records that very policy and
    generation as applied (a policy may have changed while no operator ran); else None."""
    status = body.get("status") or {}
    every = policies.indexed(view.user_policies)
    current = user_policies.effective(every, view.user_facts(name, body.get("spec") or {})) if every else None
    applied = (str(status.get("policy") or ""), int(status.get("policyGeneration") or 0))
    return applied if applied == user_policies.version(current) else None


async def resume(op: Operator, view: View, body: Any, retry: int) -> None:
    """The resume handler of a ScimUser (operator start). A user whose status records this spec as
    applied costs nothing: no LiteLLM call, no status write. Reading each one back (a /user/info per
    user, 100,000 after a restart at enterprise scale) would find nothing the drift check does not
    find later, at its own pace; anything the last run left unfinished is reconciled as usual."""
    name = body["metadata"]["name"]
    user_id = converged(op, body)
    applied = _policy_applied(view, name, body) if user_id is not None else None
    # A changed --user-id-strategy is reported by the user's handler (UserIdChanged), so not skipped.
    strategy_moved = user_id is not None and _id_note(op, name, body, user_id) is not None
    if user_id is None or applied is None or strategy_moved or name in op.memory.users.deleting:
        await reconcile(op, view, body, retry)
        return
    op.memory.users.remember(name, user_id)
    op.memory.users.ready.setdefault(name, user_id)
    # What the user policies' sweep compares with: without it every resumed user would look stale.
    op.memory.users.policies[name] = applied


async def reconcile(op: Operator, view: View, body: Any, retry: int) -> None:
    """The create/update handler of a ScimUser, and resume's when the status is not converged."""
    name = body["metadata"]["name"]
    spec = _spec(body)
    if op.diffbase.superseded(body):
        return
    async with op.memory.lock("user", name):
        status = dict(body.get("status") or {})
        try:
            out = await apply_user(op, view, name, spec, status)
        except identity.NoUserId as exc:
            # Final until the spec changes (which runs this handler again): no retry loop.
            metrics.RECONCILES.labels("user", "no_user_id").inc()
            await op.resources.update_status(USER, name, failed_status("NoExternalId", str(exc)))
            emit(body, "NoExternalId", str(exc), warning=True)
            return
        except (NotOwned, LiteLLMError) as exc:
            await reconcile_failed(op, USER, "user", body, exc, retry)
            return
        # Members' personal keys follow the user before the status records this spec as handled:
        # after that write Kopf no longer sees a change to retry.
        await group_keys.user_keys(op, view, name)
        handled = op.diffbase.handled(body)
        written = await op.resources.update_status(
            USER, name, lambda st, o: {**_status_ok(st, o, out, view, name), **handled}
        )
        if written is not None:
            op.diffbase.recorded(body, handled)
        metrics.RECONCILES.labels("user", "ok").inc()
        for reason, message in out.events:
            emit(body, reason, message)
        for reason, message in out.warnings:
            emit(body, reason, message, warning=True)


async def delete(op: Operator, body: Any, retry: int) -> None:
    """Deletion handler (behind the finalizer): keys deleted first, then the user."""
    name = body["metadata"]["name"]
    op.diffbase.forget(body)
    op.memory.users.deleting.add(name)
    op.memory.users.ready.pop(name, None)
    op.memory.users.policies.pop(name, None)
    op.memory.users.forget(name)
    user_id = (body.get("status") or {}).get("litellm", {}).get("userId") or _strategy_id(op, name, body)
    if user_id is None:
        return  # never created: the strategy names no id for it
    async with op.memory.lock("user", name):
        try:
            info = await op.litellm.user_info(user_id)
            if info is None:
                return
            owner = ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name)
            if owner != "owned" and not (owner == "untagged" and op.settings.adopt):
                emit(
                    body,
                    "NotOwned",
                    f"LiteLLM user {user_id} is not managed by this resource; left as is",
                    warning=True,
                )
                return
            keys = [str(k["token"]) for k in await op.litellm.user_keys(user_id) if k.get("token")]
            await op.litellm.key_delete(keys)
            await op.litellm.user_delete(user_id)
            for members in op.memory.members.in_team.values():  # LiteLLM removed the user from its teams
                members.discard(user_id)
        except LiteLLMError as exc:
            metrics.FAILURES.labels("user", failure_reason(exc)).inc()
            raise retry_later(exc, retry) from None
        finally:
            op.memory.forget_lock("user", name)
    emit(body, "Deleted", f"deleted LiteLLM user {user_id} and its {len(keys)} key(s)")
    op.memory.users.deleting.discard(name)


def _strategy_id(op: Operator, name: str, body: Any) -> str | None:
    """The id a never-synced user would have had: what a create that landed before a crash used."""
    try:
        return identity.user_id_of(name, _spec(body), op.settings.user_id_strategy)
    except kopf.PermanentError:
        return name


async def check_drift(op: Operator, view: View, body: Any) -> None:
    """The drift check of a ScimUser (from the sweep): compare LiteLLM with the resource, report, correct."""
    name = body["metadata"]["name"]
    status = dict(body.get("status") or {})
    if not (status.get("litellm") or {}).get("userId") or name in op.memory.users.deleting:
        return  # never synced (the handler is on it) or on its way out
    try:
        spec = _spec(body)
    except kopf.PermanentError:
        return
    user_id, note = identity.resolve(name, spec, op.settings.user_id_strategy, status["litellm"]["userId"])
    desired = desired_user(name, spec, _policy(view, name, spec, status)[1], user_id)
    try:
        # Read with the other drift checks due now, in one background /user/list call, and before
        # taking the lock: a reconcile of this user never waits behind a queued drift read.
        first = await op.litellm.drift_user_info(desired.user_id)
    except LiteLLMError as exc:
        await context.drift_check_failed(op, USER, name, exc)
        return
    async with op.memory.lock("user", name):
        if name in op.memory.users.deleting:
            return
        try:
            findings = _user_findings(op, name, desired, first)
            info = first
            if findings:  # confirmed by a fresh read: a reconcile may have run since the batched one
                info = await op.litellm.user_info(desired.user_id)
                findings = _user_findings(op, name, desired, info)
            if not desired.active and info is not None:
                keys = await op.litellm.user_keys(desired.user_id)
                loose = [str(k.get("token", ""))[:12] for k in keys if not k.get("blocked")]
                if loose:
                    findings.append(
                        f"{len(loose)} key(s) of the deactivated user are not blocked "
                        f"({', '.join(loose[:5])}...)"
                    )
            out = None
            if findings:
                metrics.DRIFT_FOUND.labels("user").inc(len(findings))
                if op.settings.drift_policy == "correct":
                    fresh = await op.resources.get(USER, name)
                    out = await apply_user(op, view, name, spec, dict((fresh or {}).get("status") or status))
                    metrics.DRIFT_CORRECTED.labels("user").inc(len(findings))
        except NotOwned:
            return
        except LiteLLMError as exc:
            await context.drift_check_failed(op, USER, name, exc)
            return
        await _report_drift(op, view, body, name, findings, out, note)


def _user_findings(op: Operator, name: str, desired: DesiredUser, info: dict[str, Any] | None) -> list[str]:
    """What differs between a LiteLLM user record and what the ScimUser wants (nothing to say about
    a record another owner holds: the reconcile reports that)."""
    if info is None:
        return [f"LiteLLM user {desired.user_id} was deleted in LiteLLM"]
    owner = ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name)
    return user_differences(desired, info) if owner == "owned" else []


async def _report_drift(
    op: Operator, view: View, body: Any, name: str, findings: list[str], out: Outcome | None,
    note: str | None,
) -> None:
    def change(st: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        gen = obj["metadata"].get("generation")
        if out is not None:
            st = _status_ok(st, obj, out, view, name)
        conds = drift_condition(st.get("conditions"), findings, out is not None, "LiteLLM matches this resource", gen)
        if not findings and note is None:
            previous = next((c for c in conds if c.get("type") == "Synced"), None)
            if previous and previous.get("status") != "True":
                conds = set_condition(conds, "Synced", True, "Synced", "LiteLLM reachable and matching", gen)
                conds = set_condition(
                    conds,
                    "Ready",
                    True,
                    "Active" if obj["spec"].get("active", True) else "Deactivated",
                    "LiteLLM user matches this resource",
                    gen,
                )
        return {**st, "conditions": conds}

    await op.resources.update_status(USER, name, change)
    context.drift_events(body, findings, f"LiteLLM user {out.user_id}" if out is not None else None)
