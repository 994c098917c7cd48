"""ScimUser -> LiteLLM internal user: create/update, key blocking on deactivation, deletion, drift.

Every function is level-based: it reads LiteLLM, compares with the resource and applies only the
difference, so running it again (retry, restart after SIGKILL, drift timer) is harmless."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from scim_contract import USER, ScimUserSpec
from scim_operator import context, group_keys, membership, metrics
from scim_operator.context import NotOwned, Operator, failure_reason, reconcile_failed, retry_later
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import (
    DesiredUser,
    desired_user,
    drift_condition,
    merged_metadata,
    now,
    ownership,
    set_condition,
    user_differences,
    user_id_for,
)
from scim_operator.resources import emit
from scim_operator.state import View

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    user_id: str
    blocked: list[str]
    events: list[tuple[str, str]] = field(default_factory=list)


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
            await op.litellm.user_new(desired.new_body(s.owner_tag, op.namespace, name))
            out.events.append(("Created", f"created LiteLLM user {desired.user_id}"))
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
            "metadata": merged_metadata(info.get("metadata"), s.owner_tag, op.namespace, name),
        }
        if desired.email:
            body["user_email"] = desired.email
        if desired.alias:
            body["user_alias"] = desired.alias
        await op.litellm.user_update(body)
        what = "; ".join(differences) if differences else "ownership tag added (adopted)"
        out.events.append(("Updated", f"updated LiteLLM user {desired.user_id}: {what}"))


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


async def apply_user(
    op: Operator, view: View, name: str, spec: ScimUserSpec, status: dict[str, Any]
) -> Outcome:
    desired = desired_user(name, spec)
    known_blocked = list((status.get("litellm") or {}).get("blockedKeys") or [])
    out = Outcome(user_id=desired.user_id, blocked=known_blocked)
    previously_ours = bool((status.get("litellm") or {}).get("userId"))
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
    op.memory.users.ready[name] = desired.user_id
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
        **st,
        "observedGeneration": gen,
        "lastSyncTime": now(),
        "groups": len(view.groups_of(name)),
        "litellm": {"userId": out.user_id, "blockedKeys": out.blocked},
        "conditions": conds,
    }


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


async def resume(op: Operator, view: View, body: Any, retry: int) -> None:
    """The resume handler of a ScimUser (operator start). A user whose status records this spec as
    applied costs nothing: no LiteLLM call, no status write. Reading each one back (a /user/info per
    user, 100,000 after a restart at enterprise scale) would find nothing the drift check does not
    find later, at its own pace; anything the last run left unfinished is reconciled as usual."""
    name = body["metadata"]["name"]
    user_id = converged(op, body)
    if user_id is None or name in op.memory.users.deleting:
        await reconcile(op, view, body, retry)
        return
    op.memory.users.ready.setdefault(name, user_id)


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


async def delete(op: Operator, body: Any, retry: int) -> None:
    """Deletion handler (behind the finalizer): keys deleted first, then the user."""
    name = body["metadata"]["name"]
    op.diffbase.forget(body)
    op.memory.users.deleting.add(name)
    op.memory.users.ready.pop(name, None)
    user_id = (body.get("status") or {}).get("litellm", {}).get("userId") or user_id_for(name)
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


async def check_drift(op: Operator, view: View, body: Any) -> None:
    """The drift timer of a ScimUser: compare LiteLLM with the resource, report, correct."""
    name = body["metadata"]["name"]
    status = dict(body.get("status") or {})
    if not (status.get("litellm") or {}).get("userId") or name in op.memory.users.deleting:
        return  # never synced (the handler is on it) or on its way out
    try:
        spec = _spec(body)
    except kopf.PermanentError:
        return
    desired = desired_user(name, spec)
    async with op.memory.lock("user", name):
        try:
            findings: list[str] = []
            info = await op.litellm.user_info(desired.user_id)
            if info is None:
                findings.append(f"LiteLLM user {desired.user_id} was deleted in LiteLLM")
            else:
                owner = ownership(info.get("metadata"), op.settings.owner_tag, op.namespace, name)
                if owner == "owned":
                    findings += user_differences(desired, info)
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
        await _report_drift(op, view, body, name, findings, out)


async def _report_drift(
    op: Operator, view: View, body: Any, name: str, findings: list[str], out: Outcome | None
) -> None:
    def change(st: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        gen = obj["metadata"].get("generation")
        if out is not None:
            st = _status_ok(st, obj, out, view, name)
        conds = drift_condition(st.get("conditions"), findings, out is not None, "LiteLLM matches this resource", gen)
        if not findings:
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
