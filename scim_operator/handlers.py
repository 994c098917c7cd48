"""Every Kopf registration of the operator, and nothing else: the indexes, handlers and timers, the
drift sweeps and the key timetable, each a few lines that build the view from Kopf's indexes and
hand off to a reconciler (``users``, ``groups``, ``group_keys``, ``policy_sync``). Everything is
registered into one registry built at start-up, so the settings (drift interval, namespace) are
plain values, not module globals."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from scim_contract import API_GROUP, GROUP, POLICY, SHARD, USER, USER_POLICY, VERSION
from scim_operator import (
    drift_sweep,
    group_keys,
    groups,
    key_secrets,
    membership,
    policies,
    policy_sync,
    user_policies,
    user_policy_sync,
    users,
)
from scim_operator.context import Operator, connection_info
from scim_operator.objects import tagged_for
from scim_operator.policies import GroupEntry, Policy
from scim_operator.state import UserEntry, View
from scim_operator.team_reads import DriftPages, TeamListing
from scim_operator.user_policies import UserPolicy

log = logging.getLogger(__name__)



def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="kubeconfig", registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return await connection_info(op.settings.kubeconfig)

    def view(kw: dict[str, Any]) -> View:
        return View(
            memory=op.memory,
            users=kw["user_index"],
            shards=kw["shard_index"],
            member_groups=kw["member_index"],
            policies=kw["policy_index"],
            groups=kw["group_index"],
            user_policies=kw["user_policy_index"],
        )

    # ---- drift and key times: one task per kind, not a daemon per resource (``drift_sweep``) ----
    sweeps: list[asyncio.Task[None]] = []
    startup: dict[str, Any] = {}  # the start-up handler's arguments: Kopf's live indexes

    async def key_check(name: str) -> float | None:
        body = op.resources.latest(GROUP, name)
        return None if body is None else await group_keys.key_tick(op, view(startup), name, body)

    # A restart's groups read their teams from one paged listing (``team_reads``).
    listing = TeamListing(
        op.litellm.team_page,
        keep=lambda row: tagged_for(row.get("metadata"), op.settings.owner_tag, op.namespace),
        groups=lambda: len(startup.get("group_index") or ()),
        max_age=lambda: float(op.settings.drift_interval),
    )

    # The group drift sweep follows the same pages, and each check takes its team's row from them.
    drift_pages = DriftPages(
        lambda number: op.litellm.team_page(number, background=True),
        team_of=op.memory.teams.ids.get,
        max_age=lambda: float(op.settings.drift_interval),
        written_since=op.litellm.written_since,
    )

    key_times = drift_sweep.Timetable(op.activity, key_check, exists=lambda name: op.resources.known(GROUP, name),
                                      idle=op.jittered_drift_interval, kind="group keys")

    @kopf.on.startup(id="drift-sweeps", registry=registry)
    async def start_sweeps(**kw: Any) -> None:
        # Startup handlers get the same live indexes as resource handlers.
        startup.update(kw)
        if not drift_sweep.captured(op.activity) and not op.settings.standalone:
            log.warning("Kopf's pause state not found: drift checks run on every replica")

        async def user(name: str) -> None:
            body = op.resources.latest(USER, name)
            if body is not None:
                await users.check_drift(op, view(kw), body)

        async def group(name: str) -> None:
            body = op.resources.latest(GROUP, name)
            if body is not None:
                await groups.check_drift(op, view(kw), body, listed=drift_pages.take)

        def interval() -> float:
            return float(op.settings.drift_interval)

        sweeps.append(asyncio.create_task(drift_sweep.sweep(
            op.activity, interval, lambda: kw["user_index"].keys(), user, kind="user")))
        sweeps.append(asyncio.create_task(drift_sweep.sweep(
            op.activity, interval, lambda: kw["group_index"].keys(), group, kind="group", walk=drift_pages.walk)))
        sweeps.append(asyncio.create_task(key_times.run()))

    @kopf.on.cleanup(id="drift-sweeps", registry=registry)
    async def stop_sweeps(**_: Any) -> None:
        for task in sweeps:
            task.cancel()
        await asyncio.gather(*sweeps, return_exceptions=True)
        await listing.close()

    # ---- indexes: the desired memberships, kept by Kopf from the watch streams -------------------
    # Coroutines, not plain functions: Kopf runs a plain function in a thread pool, a hop per event
    # that cost more than the indexing itself when thousands of resources change at once.
    @kopf.index(API_GROUP, VERSION, USER.plural, id="user_index", registry=registry)
    async def user_index(name: str, meta: Any, spec: Any, status: Any, **_: Any) -> dict[str, UserEntry]:
        if meta.get("deletionTimestamp"):
            return {}
        user_name = spec.get("userName")
        user_id = (status.get("litellm") or {}).get("userId")
        if user_id:
            op.memory.users.remember(name, str(user_id))
        return {name: UserEntry(synced=bool(user_id), user_name=str(user_name) if user_name else None,
                                active=spec.get("active", True) is not False,
                                attributes=user_policies.user_attributes(spec))}

    @kopf.index(API_GROUP, VERSION, SHARD.plural, id="shard_index", registry=registry)
    async def shard_index(name: str, spec: Any, **_: Any) -> dict[str, tuple[str, tuple[str, ...], int]]:
        group = spec.get("group")
        if not group:
            return {}
        return {group: (name, tuple(spec.get("users") or ()), len(spec.get("groups") or ()))}

    @kopf.index(API_GROUP, VERSION, SHARD.plural, id="member_index", registry=registry)
    async def member_index(spec: Any, **_: Any) -> dict[str, str]:
        group = spec.get("group")
        return {uid: group for uid in spec.get("users") or ()} if group else {}

    # ---- the newest ScimUser and ScimGroup objects, for status writes without a read first ----
    @kopf.on.event(API_GROUP, VERSION, USER.plural, id="user-seen", registry=registry)
    async def user_seen(event: kopf.RawEvent, name: str, **_: Any) -> None:
        op.activity.remember_handler_context()
        op.resources.seen(USER, name, None if event.get("type") == "DELETED" else dict(event["object"]))

    @kopf.on.event(API_GROUP, VERSION, GROUP.plural, id="group-seen", registry=registry)
    async def group_seen(event: kopf.RawEvent, name: str, **_: Any) -> None:
        op.activity.remember_handler_context()
        gone = event.get("type") == "DELETED"
        if gone:
            op.memory.teams.deleting.discard(name)
        op.resources.seen(GROUP, name, None if gone else dict(event["object"]))

    # ---- ScimUser ----------------------------------------------------------------------------
    @kopf.on.resume(API_GROUP, VERSION, USER.plural, id="user-resume", registry=registry)
    async def user_resumed(body: kopf.Body, retry: int, **kw: Any) -> None:
        await users.resume(op, view(kw), body, retry)

    @kopf.on.create(API_GROUP, VERSION, USER.plural, id="user-create", registry=registry)
    @kopf.on.update(API_GROUP, VERSION, USER.plural, id="user-update", field="spec", registry=registry)
    async def user_changed(body: kopf.Body, retry: int, **kw: Any) -> None:
        await users.reconcile(op, view(kw), body, retry)

    @kopf.on.delete(API_GROUP, VERSION, USER.plural, id="user-delete", registry=registry)
    async def user_deleted(body: kopf.Body, retry: int, **kw: Any) -> None:
        await users.delete(op, body, retry)
        await group_keys.user_keys(op, view(kw), body["metadata"]["name"])

    # ---- ScimGroup ---------------------------------------------------------------------------
    @kopf.on.resume(API_GROUP, VERSION, GROUP.plural, id="group-resume", registry=registry)
    async def group_resumed(body: kopf.Body, name: str, retry: int, **kw: Any) -> None:
        key_times.at(name, time.time() + 1.0)  # after this reconcile: rotations and overlaps due meanwhile
        await groups.reconcile(op, view(kw), body, retry, resumed=True, listing=listing)

    @kopf.on.create(API_GROUP, VERSION, GROUP.plural, id="group-create", registry=registry)
    @kopf.on.update(API_GROUP, VERSION, GROUP.plural, id="group-update", field="spec", registry=registry)
    async def group_changed(body: kopf.Body, name: str, retry: int, **kw: Any) -> None:
        key_times.at(name, time.time() + 1.0)
        await groups.reconcile(op, view(kw), body, retry)

    @kopf.on.delete(API_GROUP, VERSION, GROUP.plural, id="group-delete", registry=registry)
    async def group_deleted(body: kopf.Body, name: str, retry: int, **kw: Any) -> None:
        key_times.forget(name)
        await groups.delete(op, view(kw), body, retry)

    # ---- ScimMemberShard: differences, no finalizer, nothing written to the shard ------------
    @kopf.on.event(API_GROUP, VERSION, SHARD.plural, id="shard", registry=registry)
    async def shard_event(event: kopf.RawEvent, body: kopf.Body, **kw: Any) -> None:
        await membership.shard_changed(op, view(kw), event.get("type"), body)

    # ---- ScimTeamPolicy, group labels, key rotation ------------------------------------------
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
        await policy_sync.reapply(op, view(kw))

    @kopf.on.field(API_GROUP, VERSION, GROUP.plural, id="group-labels", field="metadata.labels", registry=registry)
    async def labels_changed(name: str, **kw: Any) -> None:
        await policy_sync.reapply(op, view(kw), only={name})

    @kopf.on.field(
        API_GROUP, VERSION, GROUP.plural, id="group-rotate-keys",
        field=("metadata", "annotations", key_secrets.ANNOTATION_ROTATE), registry=registry,
    )
    async def rotate_requested(name: str, new: Any, retry: int, **kw: Any) -> None:
        if new:
            await group_keys.rotate(op, view(kw), name, retry)

    @kopf.timer(API_GROUP, VERSION, POLICY.plural, id="policy-status", interval=policy_sync.STATUS_INTERVAL,
                registry=registry)
    async def policy_status(name: str, body: kopf.Body, **kw: Any) -> None:
        await policy_sync.refresh_status(op, view(kw), name, body)

    # ---- ScimUserPolicy: users' settings follow policies, group membership and group labels ---
    @kopf.index(API_GROUP, VERSION, USER_POLICY.plural, id="user_policy_index", registry=registry)
    async def user_policy_index(name: str, meta: Any, spec: Any, **_: Any) -> dict[str, UserPolicy]:
        if meta.get("deletionTimestamp"):
            return {}
        parsed = user_policies.parse_user_policy(name, int(meta.get("generation") or 0), dict(spec))
        return {name: parsed} if parsed is not None else {}

    @kopf.on.event(API_GROUP, VERSION, USER_POLICY.plural, id="user-policy-changed", registry=registry)
    @kopf.on.event(API_GROUP, VERSION, SHARD.plural, id="user-policy-members", registry=registry)
    async def user_policy_inputs(event: kopf.RawEvent, **kw: Any) -> None:
        if event.get("type") is None:
            return  # initial listing: every user's resume handler already asks for its policy
        user_policy_sync.sweep_soon(op, view(kw))

    @kopf.on.event(API_GROUP, VERSION, GROUP.plural, id="user-policy-groups", registry=registry)
    async def user_policy_groups(event: kopf.RawEvent, **kw: Any) -> None:
        user_policy_sync.group_changed(op, view(kw), event)

    @kopf.timer(API_GROUP, VERSION, USER_POLICY.plural, id="user-policy-status",
                interval=user_policy_sync.STATUS_INTERVAL, registry=registry)
    async def user_policy_status(name: str, body: kopf.Body, **kw: Any) -> None:
        await user_policy_sync.refresh_status(op, view(kw), name, body)

    return registry
