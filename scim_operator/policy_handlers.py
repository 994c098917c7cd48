"""Kopf registrations of team policies and keys: the policy and group indexes, re-reconciling the
groups whose effective policy changed, the per-group key timer (rotation, end of overlaps) and the
policy status counts shown by ``kubectl get scimteampolicies``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from pydantic import ValidationError

from scim_contract import API_GROUP, GROUP, POLICY, VERSION, ScimTeamPolicySpec
from scim_operator import groups, key_secrets, keys, policies
from scim_operator.context import Operator
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import set_condition
from scim_operator.policies import GroupEntry, Policy
from scim_operator.resources import emit, ref
from scim_operator.state import View

log = logging.getLogger(__name__)

# Groups re-reconciled at once after a policy change.
REAPPLY_CONCURRENCY = 4
# How often each policy's status counts are recomputed from the indexes (in memory, written on change).
POLICY_STATUS_INTERVAL = 3.0


def _entry(view: View, group: str) -> GroupEntry | None:
    entry = next(iter(view.groups.get(group) or ()), None)
    return entry if isinstance(entry, GroupEntry) else None


def _policy_of(view: View, group: str) -> Policy | None:
    entry = _entry(view, group)
    return policies.effective(policies.indexed(view.policies), entry.facts) if entry is not None else None


async def reapply(op: Operator, view: View, only: set[str] | None = None) -> None:
    """Re-reconcile every known group whose effective policy (or its generation) changed."""
    stale = []
    for entry in policies.indexed(view.groups):
        name = entry.facts.name
        if only is not None and name not in only:
            continue
        if name not in op.memory.teams:
            continue  # not reconciled yet: its own handler picks the policy up
        if policies.version(_policy_of(view, name)) != op.memory.group_policies.get(name):
            stale.append(name)
    limit = asyncio.Semaphore(REAPPLY_CONCURRENCY)

    async def one(name: str) -> None:
        async with limit:
            body = await op.resources.get(GROUP, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                await groups.reconcile(op, view, body, 0)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                # The group's drift timer retries; the group's status already says why.
                log.warning("group not re-reconciled yet", extra={"fields": {"group": name, "error": str(exc)}})

    await asyncio.gather(*(one(n) for n in stale))


async def _sync_keys(op: Operator, view: View, group: str, only: set[str] | None) -> None:
    """Sync one group's keys under its lock, then record the count in its status and post Events."""
    team_id = op.memory.teams.get(group)
    if team_id is None:
        return
    policy = _policy_of(view, group)
    async with op.memory.lock("group", group):
        events = await keys.sync_group(op, view, group, team_id, policy, only=only)
        target = await op.resources.update_status(
            GROUP,
            group,
            lambda st, o: {
                **st,
                "keys": keys.status_of(op.memory, group),
                "conditions": keys.keys_condition(
                    op.memory, group, st.get("conditions"), o["metadata"].get("generation")
                ),
            },
        )
    if target is not None:
        gref = ref(GROUP, op.namespace, group, target["metadata"].get("uid"))
        for reason, message in events:
            emit(gref, reason, message)


async def user_keys(op: Operator, view: View, user: str) -> None:
    """A ScimUser changed (activated, deactivated, deleted): its personal keys follow, in every group."""
    for group in view.groups_of(user):
        if keys.wants_member_keys(_policy_of(view, group)) or op.memory.group_keys.get(group):
            try:
                await _sync_keys(op, view, group, only={user})
            except (LiteLLMError, keys.KeyDeliveryError) as exc:
                # The group's key timer and drift check converge it later.
                log.warning("member keys not updated yet", extra={"fields": {"group": group, "error": str(exc)}})


async def _key_tick(op: Operator, view: View, group: str, body: Any) -> float | None:
    """Delete retired keys whose overlap ended and rotate keys that are due. Returns the epoch of the
    next thing to do, or None."""
    policy = _policy_of(view, group)
    recorded = keys.recorded_namespaces(body)
    if not keys.wants_keys(policy) and not recorded and not op.memory.group_keys.get(group):
        return None
    namespaces = keys.key_namespaces(op, group, policy, recorded)
    async with op.memory.lock("group", group):
        following = await keys.sweep(op, group, namespaces)
        existing = await keys.list_delivered(op, namespaces, group)
    rotation = keys.next_rotation(existing, policy)
    if rotation is not None and rotation <= time.time() and group in op.memory.teams:
        await _sync_keys(op, view, group, None)
        return time.time() + 1.0
    times = [t for t in (following, rotation) if t is not None]
    return min(times, default=None)


def _policy_status(view: View, name: str, body: Any) -> dict[str, Any]:
    gen = body["metadata"].get("generation")
    every = policies.indexed(view.policies)
    selected = [
        e for e in policies.indexed(view.groups) if (p := policies.effective(every, e.facts)) and p.name == name
    ]
    synced = sum(1 for e in selected if e.synced and e.policy == name)
    st = dict(body.get("status") or {})
    try:
        ScimTeamPolicySpec.model_validate(dict(body.get("spec") or {}))
        conds = set_condition(
            st.get("conditions"), "Ready", True, "Valid",
            f"effective policy of {len(selected)} group(s), {synced} synced", gen,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        conds = set_condition(st.get("conditions"), "Ready", False, "Invalid", f"{where}: {first['msg']}", gen)
    return {**st, "observedGeneration": gen, "selectedGroups": len(selected), "syncedGroups": synced,
            "conditions": conds}


def _same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(st: dict[str, Any]) -> dict[str, Any]:
        return {**st, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                     for c in st.get("conditions") or []]}

    return strip(a) == strip(b)


def register(registry: kopf.OperatorRegistry, op: Operator, view_of: Callable[[dict[str, Any]], View]) -> None:
    @kopf.index(API_GROUP, VERSION, POLICY.plural, id="policy_index", registry=registry)
    async def policy_index(name: str, meta: Any, spec: Any, **_: Any) -> dict[str, Policy]:
        if meta.get("deletionTimestamp"):
            return {}
        parsed = policies.parse_policy(name, int(meta.get("generation") or 0), dict(spec))
        return {name: parsed} if parsed is not None else {}

    @kopf.index(API_GROUP, VERSION, GROUP.plural, id="group_index", registry=registry)
    async def group_index(name: str, meta: Any, spec: Any, status: Any, **_: Any) -> dict[str, GroupEntry]:
        if meta.get("deletionTimestamp"):
            return {}
        return {name: policies.group_entry(name, dict(spec), dict(meta.get("labels") or {}), dict(status))}

    @kopf.on.event(API_GROUP, VERSION, POLICY.plural, id="policy-changed", registry=registry)
    async def policy_changed(event: kopf.RawEvent, **kw: Any) -> None:
        if event.get("type") is None:
            return  # initial listing: every group's resume handler already uses the indexes
        await reapply(op, view_of(kw))

    @kopf.on.field(API_GROUP, VERSION, GROUP.plural, id="group-labels", field="metadata.labels", registry=registry)
    async def labels_changed(name: str, **kw: Any) -> None:
        await reapply(op, view_of(kw), only={name})

    @kopf.on.field(
        API_GROUP, VERSION, GROUP.plural, id="group-rotate-keys",
        field=("metadata", "annotations", key_secrets.ANNOTATION_ROTATE), registry=registry,
    )
    async def rotate_requested(name: str, new: Any, retry: int, **kw: Any) -> None:
        if not new:
            return
        try:
            await _sync_keys(op, view_of(kw), name, None)
        except (LiteLLMError, keys.KeyDeliveryError) as exc:
            raise kopf.TemporaryError(f"keys not rotated yet: {exc}", delay=min(30, 2 ** min(retry, 4))) from None

    @kopf.daemon(API_GROUP, VERSION, GROUP.plural, id="group-keys", cancellation_timeout=5.0, registry=registry)
    async def group_keys(stopped: kopf.DaemonStopped, name: str, body: kopf.Body, **kw: Any) -> None:
        await stopped.wait(1.0)  # let the group's resume handler run first after a restart
        while not stopped:
            wait = op.jittered_drift_interval()
            try:
                following = await _key_tick(op, view_of(kw), name, body)
                if following is not None:
                    wait = min(wait, max(0.2, following - time.time()))
            except (LiteLLMError, keys.KeyDeliveryError) as exc:
                log.warning("key timer of group failed", extra={"fields": {"group": name, "error": str(exc)}})
                wait = min(wait, 5.0)
            await stopped.wait(wait)

    @kopf.timer(API_GROUP, VERSION, POLICY.plural, id="policy-status", interval=POLICY_STATUS_INTERVAL,
                registry=registry)
    async def policy_status(name: str, body: kopf.Body, **kw: Any) -> None:
        new = _policy_status(view_of(kw), name, body)
        if not _same_status(new, dict(body.get("status") or {})):
            await op.resources.update_status(POLICY, name, lambda st, o: _policy_status(view_of(kw), name, o))
