"""The Kopf registrations: thin functions that build the membership view from Kopf's indexes and
delegate to ``users`` and ``groups``. Everything is registered into one registry built at start-up,
so the settings (drift interval, namespace) are plain values, not module globals."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import kopf

from scim_common import kube
from scim_contract import API_GROUP, GROUP, SHARD, USER, VERSION
from scim_operator import groups, policy_handlers, users
from scim_operator.context import Operator
from scim_operator.state import UserEntry, View

log = logging.getLogger(__name__)


async def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    """Kopf's credentials from the same source as our own client: --kubeconfig, in-cluster, $KUBECONFIG."""
    api = await kube.api_client(kubeconfig)
    async with api:
        cfg = api.configuration
        header: Any = cfg.get_api_key_with_prefix("BearerToken")
        if inspect.isawaitable(header):
            header = await header
        scheme, _, token = str(header or "").partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
        return kopf.ConnectionInfo(
            server=str(cfg.host),
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme if token else None,
            token=token or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )


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
        )

    # ---- indexes: the desired memberships, kept by Kopf from the watch streams -------------------
    # Coroutines, not plain functions: Kopf runs a plain function in a thread pool, a hop per event
    # that cost more than the indexing itself when thousands of resources change at once.
    @kopf.index(API_GROUP, VERSION, USER.plural, id="user_index", registry=registry)
    async def user_index(name: str, meta: Any, spec: Any, status: Any, **_: Any) -> dict[str, UserEntry]:
        if meta.get("deletionTimestamp"):
            return {}
        user_name = spec.get("userName")
        synced = bool((status.get("litellm") or {}).get("userId"))
        return {name: UserEntry(synced=synced, user_name=str(user_name) if user_name else None,
                                active=spec.get("active", True) is not False)}

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
        op.resources.seen(USER, name, None if event.get("type") == "DELETED" else dict(event["object"]))

    @kopf.on.event(API_GROUP, VERSION, GROUP.plural, id="group-seen", registry=registry)
    async def group_seen(event: kopf.RawEvent, name: str, **_: Any) -> None:
        op.resources.seen(GROUP, name, None if event.get("type") == "DELETED" else dict(event["object"]))

    # ---- ScimUser ----------------------------------------------------------------------------
    @kopf.on.resume(API_GROUP, VERSION, USER.plural, id="user-resume", registry=registry)
    @kopf.on.create(API_GROUP, VERSION, USER.plural, id="user-create", registry=registry)
    @kopf.on.update(API_GROUP, VERSION, USER.plural, id="user-update", field="spec", registry=registry)
    async def user_changed(body: kopf.Body, retry: int, **kw: Any) -> None:
        await users.reconcile(op, view(kw), body, retry)

    @kopf.on.delete(API_GROUP, VERSION, USER.plural, id="user-delete", registry=registry)
    async def user_deleted(body: kopf.Body, retry: int, **kw: Any) -> None:
        await users.delete(op, body, retry)
        await policy_handlers.user_keys(op, view(kw), body["metadata"]["name"])

    @kopf.daemon(
        API_GROUP, VERSION, USER.plural, id="user-drift", cancellation_timeout=5.0, registry=registry
    )
    async def user_drift(stopped: kopf.DaemonStopped, body: kopf.Body, **kw: Any) -> None:
        while not stopped:
            await stopped.wait(op.jittered_drift_interval())
            if stopped:
                return
            await users.check_drift(op, view(kw), body)

    # ---- ScimGroup ---------------------------------------------------------------------------
    @kopf.on.resume(API_GROUP, VERSION, GROUP.plural, id="group-resume", registry=registry)
    @kopf.on.create(API_GROUP, VERSION, GROUP.plural, id="group-create", registry=registry)
    @kopf.on.update(API_GROUP, VERSION, GROUP.plural, id="group-update", field="spec", registry=registry)
    async def group_changed(body: kopf.Body, retry: int, **kw: Any) -> None:
        await groups.reconcile(op, view(kw), body, retry)

    @kopf.on.delete(API_GROUP, VERSION, GROUP.plural, id="group-delete", registry=registry)
    async def group_deleted(body: kopf.Body, retry: int, **kw: Any) -> None:
        await groups.delete(op, view(kw), body, retry)

    @kopf.daemon(
        API_GROUP, VERSION, GROUP.plural, id="group-drift", cancellation_timeout=5.0, registry=registry
    )
    async def group_drift(stopped: kopf.DaemonStopped, body: kopf.Body, **kw: Any) -> None:
        while not stopped:
            await stopped.wait(op.jittered_drift_interval())
            if stopped:
                return
            await groups.check_drift(op, view(kw), body)

    # ---- ScimMemberShard: differences, no finalizer, nothing written to the shard ------------
    @kopf.on.event(API_GROUP, VERSION, SHARD.plural, id="shard", registry=registry)
    async def shard_event(event: kopf.RawEvent, body: kopf.Body, **kw: Any) -> None:
        await groups.shard_changed(op, view(kw), event.get("type"), body)

    # ---- ScimTeamPolicy, group labels, key rotation ------------------------------------------
    policy_handlers.register(registry, op, view)
    return registry
