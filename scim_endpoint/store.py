"""SCIM users and groups stored as custom resources, read from watch-backed copies.

One ScimUser / ScimGroup per resource (the SCIM id is the object name). A group's members live in up
to ``SHARDS`` ScimMemberShard objects, so changing one member rewrites one small shard. userName and
group displayName are reserved by ScimNameClaim objects whose names derive from the lower-cased
value: the API server's "already exists" decides a race between replicas.

Consistency:
- Writes go to the API server with the cached resourceVersion as precondition; a 409 Conflict means
  the copy was stale (another replica wrote) and surfaces as ``Stale``, on which the caller reloads
  straight from the API server and retries.
- A write's response is applied to the copy at once: this replica reads its own writes.
- Reads first pass ``fresh()``: one small list call (shared by every read in flight) tells the API
  server's current revision R, then the read waits until the watches have delivered R, so a write
  acknowledged by another replica before the read arrived is visible here too.

Nothing half-written on error: a multi-object write undoes what it already wrote when a later step
fails (claims released, shards restored, a just-created group deleted)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scim_common import clock
from scim_contract import (
    ANNOTATION_LAST_MODIFIED,
    API_GROUP,
    API_VERSION,
    CLAIM,
    FINALIZER,
    GROUP,
    LABEL_GROUP,
    SHARD,
    SHARDS,
    USER,
    VERSION,
    claim_name,
    shard_name,
    shard_of,
)
from scim_endpoint.errors import ScimError, conflict
from scim_endpoint.informer import Informer, Obj, rv_of, terminating

log = logging.getLogger(__name__)

# When the claim was last taken; a claim younger than CLAIM_GRACE is never taken over, because its
# owner may be a create or rename still in flight on another replica.
ANNOTATION_CLAIMED_AT = f"{API_GROUP}/claimed-at"
CLAIM_GRACE = 30.0
# See Informer.wait_for: how long a silent watch must stay silent to count as caught up.
WATCH_QUIET = 0.05
WATCH_TIMEOUT = 2.0

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class Stale(Exception):
    """The cached state a write was based on is outdated; reload and retry."""


class Unavailable(Exception):
    """The Kubernetes API failed; answered as 503."""




@dataclass
class UserRecord:
    id: str
    spec: dict[str, Any]
    meta: dict[str, Any]
    obj: Obj = field(repr=False)


@dataclass
class GroupRecord:
    id: str
    spec: dict[str, Any]
    meta: dict[str, Any]
    obj: Obj = field(repr=False)
    # shard number -> shard object, for the shards that exist
    shards: dict[int, Obj] = field(default_factory=dict, repr=False)

    def member_ids(self) -> tuple[set[str], set[str]]:
        users: set[str] = set()
        groups: set[str] = set()
        for shard in self.shards.values():
            users.update(shard["spec"].get("users") or [])
            groups.update(shard["spec"].get("groups") or [])
        return users, groups

    def members(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for number in sorted(self.shards):
            spec = self.shards[number]["spec"]
            out.extend({"value": m, "type": "User"} for m in spec.get("users") or [])
            out.extend({"value": m, "type": "Group"} for m in spec.get("groups") or [])
        return out


def _user_meta(obj: Obj) -> dict[str, Any]:
    md = obj["metadata"]
    created = md.get("creationTimestamp")
    return {
        "resourceType": "User",
        "created": created,
        "lastModified": (md.get("annotations") or {}).get(ANNOTATION_LAST_MODIFIED) or created,
        "version": f'W/"{md.get("generation", 1)}"',
    }


def _group_meta(obj: Obj, shards: dict[int, Obj]) -> dict[str, Any]:
    md = obj["metadata"]
    created = md.get("creationTimestamp")
    stamps = [(md.get("annotations") or {}).get(ANNOTATION_LAST_MODIFIED) or created]
    stamps += [_last_write(s) for s in shards.values()]
    # The version must move when a member changes, and members live in the shards.
    digest = hashlib.sha256(str(md.get("generation", 1)).encode())
    for number in sorted(shards):
        digest.update(f"|{number}:{shards[number]['metadata'].get('generation', 1)}".encode())
    return {
        "resourceType": "Group",
        "created": created,
        "lastModified": max(s for s in stamps if s),
        "version": f'W/"{digest.hexdigest()[:16]}"',
    }


def _last_write(obj: Obj) -> str | None:
    """When an object was last written, from the API server's own field-manager records: a member
    shard carries no last-modified annotation, because changing one on every rewrite roughly doubles
    the cost of the write (the hot path of group PATCH)."""
    md = obj["metadata"]
    times = [str(m["time"]) for m in md.get("managedFields") or [] if m.get("time")]
    return max(times) if times else md.get("creationTimestamp")


def _api_error(exc: ApiException, what: str) -> Exception:
    """Map an API failure the caller did not expect to a SCIM answer."""
    if exc.status == 422:
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except (TypeError, ValueError):
            message = ""
        # The CRD schema rejected a value (too long, wrong type): the client's input, not us.
        detail = message.split(": ", 1)[-1] if message else f"invalid {what}"
        return ScimError(400, f"Invalid {what}: {detail}", "invalidValue")
    log.warning("Kubernetes API error on %s: %s %s", what, exc.status, exc.reason)
    return Unavailable(f"Kubernetes API error ({exc.status}) on {what}")


class Store:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.api = client.CustomObjectsApi(api)

        def lister(plural: str) -> Any:
            return partial(self.api.list_namespaced_custom_object, API_GROUP, VERSION, namespace, plural)

        self.users = Informer(USER.plural, lister(USER.plural))
        self.groups = Informer(GROUP.plural, lister(GROUP.plural))
        self.shards = Informer(SHARD.plural, lister(SHARD.plural))
        self._users_by_name: dict[str, set[str]] = {}
        self._users_by_external: dict[str, set[str]] = {}
        self._groups_by_name: dict[str, set[str]] = {}
        self._group_shards: dict[str, dict[int, str]] = {}
        self._member_of: dict[str, set[str]] = {}
        self.users.listeners.append(self._index_user)
        self.groups.listeners.append(self._index_group)
        self.shards.listeners.append(self._index_shard)
        self._revision_task: asyncio.Task[int] | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        for informer in self._informers():
            informer.start()

    async def stop(self) -> None:
        for informer in self._informers():
            await informer.stop()

    def _informers(self) -> tuple[Informer, ...]:
        return (self.users, self.groups, self.shards)

    @property
    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self._informers())

    async def wait_ready(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self._informers()))

    # ---- indexes (kept by the informers' listeners) ---------------------------------------------
    @staticmethod
    def _move(index: dict[str, set[str]], old: str | None, new: str | None, name: str) -> None:
        if old == new:
            return
        if old is not None and old in index:
            index[old].discard(name)
            if not index[old]:
                del index[old]
        if new is not None:
            index.setdefault(new, set()).add(name)

    def _index_user(self, name: str, old: Obj | None, new: Obj | None) -> None:
        def key(obj: Obj | None) -> str | None:
            return obj["spec"].get("userName", "").casefold() if obj else None

        def ext(obj: Obj | None) -> str | None:
            return obj["spec"].get("externalId") if obj else None

        self._move(self._users_by_name, key(old), key(new), name)
        self._move(self._users_by_external, ext(old), ext(new), name)

    def _index_group(self, name: str, old: Obj | None, new: Obj | None) -> None:
        def key(obj: Obj | None) -> str | None:
            return obj["spec"].get("displayName", "").casefold() if obj else None

        self._move(self._groups_by_name, key(old), key(new), name)

    def _index_shard(self, name: str, old: Obj | None, new: Obj | None) -> None:
        def members(obj: Obj | None) -> set[str]:
            if obj is None:
                return set()
            return set(obj["spec"].get("users") or []) | set(obj["spec"].get("groups") or [])

        ref = new or old
        assert ref is not None
        group, number = ref["spec"]["group"], int(ref["spec"]["shard"])
        if new is None:
            self._group_shards.get(group, {}).pop(number, None)
        else:
            self._group_shards.setdefault(group, {})[number] = name
        before, after = members(old), members(new)
        for member in before - after:
            self._move(self._member_of, member, None, group)
        for member in after - before:
            self._move(self._member_of, None, member, group)

    # ---- reads from the copies ------------------------------------------------------------------
    async def fresh(self, *informers: Informer) -> None:
        """Wait until the copies include every write acknowledged before this call (see module doc)."""
        revision = await self._current_revision()
        await asyncio.gather(*(i.wait_for(revision, WATCH_QUIET, WATCH_TIMEOUT) for i in informers))

    async def _current_revision(self) -> int:
        # Requests arriving while no list is on the wire share the next one; it is sent after they
        # arrived, so its revision covers every write acknowledged before them.
        task = self._revision_task
        if task is None:
            task = self._revision_task = asyncio.create_task(self._fetch_revision())
        return await asyncio.shield(task)

    async def _fetch_revision(self) -> int:
        self._revision_task = None
        try:
            # A name selector is answered by a single-key lookup however many users exist (a plain
            # limit=1 list measured 5-10x slower with 10,000 users); the list's resourceVersion is the
            # store's current revision either way.
            resp = await self.api.list_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, USER.plural, field_selector="metadata.name=revision-probe",
                _preload_content=False,
            )
            body = json.loads(await resp.read())
        except ApiException as exc:
            raise _api_error(exc, "revision") from None
        return int(body["metadata"]["resourceVersion"])

    def user(self, uid: str) -> UserRecord | None:
        obj = self.users.objects.get(uid)
        return self._user_record(obj) if obj else None

    def user_objects(self) -> Iterable[Obj]:
        return self.users.objects.values()

    def user_record(self, obj: Obj) -> UserRecord:
        return self._user_record(obj)

    def users_named(self, user_name: str) -> set[str]:
        return set(self._users_by_name.get(user_name.casefold(), ()))

    def users_with_external_id(self, external_id: str) -> set[str]:
        return set(self._users_by_external.get(external_id, ()))

    def groups_named(self, display_name: str) -> set[str]:
        return set(self._groups_by_name.get(display_name.casefold(), ()))

    def group_ids_of(self, member: str) -> set[str]:
        return set(self._member_of.get(member, ()))

    def user_groups(self, uid: str) -> list[dict[str, str]]:
        """The user's direct groups, for the read-only ``groups`` attribute."""
        out = []
        for gid in sorted(self._member_of.get(uid, ())):
            group = self.groups.objects.get(gid)
            if group is not None:
                out.append({"value": gid, "display": group["spec"].get("displayName", ""), "type": "direct"})
        return out

    def group(self, gid: str) -> GroupRecord | None:
        obj = self.groups.objects.get(gid)
        return self._group_record(obj) if obj else None

    def group_objects(self) -> Iterable[Obj]:
        return self.groups.objects.values()

    def group_record(self, obj: Obj) -> GroupRecord:
        return self._group_record(obj)

    def _user_record(self, obj: Obj) -> UserRecord:
        return UserRecord(obj["metadata"]["name"], obj["spec"], _user_meta(obj), obj)

    def _group_record(self, obj: Obj) -> GroupRecord:
        gid = obj["metadata"]["name"]
        shards = {}
        for number, name in self._group_shards.get(gid, {}).items():
            shard = self.shards.objects.get(name)
            if shard is not None:
                shards[number] = shard
        return GroupRecord(gid, obj["spec"], _group_meta(obj, shards), obj, shards)

    # ---- loads for writes: the copy, or the API server when the copy may be stale ---------------
    async def load_user(self, uid: str, *, fresh: bool = False) -> UserRecord | None:
        if not _NAME.match(uid):
            return None
        if not fresh and uid in self.users.objects:
            return self.user(uid)
        obj = await self._get(USER.plural, uid)
        if obj is None:
            return None
        self.users.apply(obj)
        return self._user_record(self.users.objects.get(uid, obj))

    async def load_group(self, gid: str, *, fresh: bool = False) -> GroupRecord | None:
        if not _NAME.match(gid):
            return None
        if not fresh and gid in self.groups.objects:
            return self.group(gid)
        obj = await self._get(GROUP.plural, gid)
        if obj is None:
            return None
        self.groups.apply(obj)
        try:
            resp = await self.api.list_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, SHARD.plural, label_selector=f"{LABEL_GROUP}={gid}",
                _preload_content=False,
            )
            body = json.loads(await resp.read())
        except ApiException as exc:
            raise _api_error(exc, "group members") from None
        for shard in body.get("items") or []:
            self.shards.apply(shard)
        return self._group_record(self.groups.objects.get(gid, obj))

    # ---- users ----------------------------------------------------------------------------------
    async def create_user(self, spec: dict[str, Any]) -> UserRecord:
        uid = str(uuid.uuid4())
        await self._claim("User", spec["userName"], uid)
        body = self._object(USER.kind, uid, spec)
        try:
            obj = await self._create(USER.plural, body)
        except BaseException:
            await self._release("User", spec["userName"], uid)
            raise
        self.users.apply(obj)
        return self._user_record(obj)

    async def replace_user(self, current: UserRecord, spec: dict[str, Any]) -> UserRecord:
        old_name, new_name = current.spec["userName"], spec["userName"]
        renamed = claim_name("User", old_name) != claim_name("User", new_name)
        if renamed:
            await self._claim("User", new_name, current.id)
        body = self._object(USER.kind, current.id, spec, base=current.obj)
        try:
            obj = await self._replace(USER.plural, current.id, body)
        except BaseException:
            if renamed:
                await self._release("User", new_name, current.id)
            raise
        self.users.apply(obj)
        if renamed:
            await self._release("User", old_name, current.id)
        return self._user_record(obj)

    async def delete_user(self, current: UserRecord) -> None:
        await self._delete(USER.plural, current.id, current.obj)
        self.users.forget(current.id)
        await self._release("User", current.spec["userName"], current.id)
        await self._drop_member(current.id)

    # ---- groups ---------------------------------------------------------------------------------
    async def create_group(self, spec: dict[str, Any], members: list[dict[str, Any]]) -> GroupRecord:
        gid = str(uuid.uuid4())
        await self._claim("Group", spec["displayName"], gid)
        try:
            obj = await self._create(GROUP.plural, self._object(GROUP.kind, gid, spec))
        except BaseException:
            await self._release("Group", spec["displayName"], gid)
            raise
        self.groups.apply(obj)
        record = self._group_record(obj)
        try:
            await self._write_members(record, members)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._delete_group_objects(record)
            raise
        return self._group_record(obj)

    async def update_group(
        self, current: GroupRecord, spec: dict[str, Any], members: list[dict[str, Any]] | None
    ) -> GroupRecord:
        """Write a group's new spec and (when not None) its complete new member list; only the
        shards whose content changes are rewritten."""
        old_name, new_name = current.spec["displayName"], spec["displayName"]
        renamed = claim_name("Group", old_name) != claim_name("Group", new_name)
        if renamed:
            await self._claim("Group", new_name, current.id)
        written: list[tuple[int, Obj | None, Obj]] = []
        try:
            if members is not None:
                written = await self._write_members(current, members)
            obj = current.obj
            if spec != current.spec:
                body = self._object(GROUP.kind, current.id, spec, base=current.obj)
                obj = await self._replace(GROUP.plural, current.id, body)
                self.groups.apply(obj)
        except BaseException:
            await self._restore_shards(current, written)
            if renamed:
                await self._release("Group", new_name, current.id)
            raise
        if renamed:
            await self._release("Group", old_name, current.id)
        return self._group_record(self.groups.objects.get(current.id, obj))

    async def delete_group(self, current: GroupRecord) -> None:
        await self._delete_group_objects(current)
        await self._drop_member(current.id)

    async def _delete_group_objects(self, current: GroupRecord) -> None:
        await self._delete(GROUP.plural, current.id, current.obj)
        self.groups.forget(current.id)
        # Shards are owned by the group, but not every cluster runs a garbage collector.
        for shard in current.shards.values():
            name = shard["metadata"]["name"]
            with contextlib.suppress(Stale):
                await self._delete(SHARD.plural, name, None)
            self.shards.forget(name)
        await self._release("Group", current.spec["displayName"], current.id)

    async def _write_members(self, current: GroupRecord, members: list[dict[str, Any]]) -> list[
            tuple[int, Obj | None, Obj]]:
        wanted: dict[int, tuple[list[str], list[str]]] = {n: ([], []) for n in range(SHARDS)}
        seen: set[str] = set()
        for member in members:
            value = str(member["value"])
            if value in seen:
                continue
            seen.add(value)
            users, groups = wanted[shard_of(value)]
            (groups if member.get("type") == "Group" else users).append(value)
        written: list[tuple[int, Obj | None, Obj]] = []
        try:
            for number in range(SHARDS):
                users, groups = wanted[number]
                existing = current.shards.get(number)
                if existing is None and not users and not groups:
                    continue
                if existing is not None:
                    spec = existing["spec"]
                    # Keep the stored order of kept members so a rewrite only differs where needed.
                    if set(spec.get("users") or []) == set(users) and set(spec.get("groups") or []) == set(groups):
                        continue
                    users = _keep_order(spec.get("users") or [], users)
                    groups = _keep_order(spec.get("groups") or [], groups)
                obj = await self._put_shard(current, number, existing, users, groups)
                written.append((number, existing, obj))
        except BaseException:
            await self._restore_shards(current, written)
            raise
        return written

    async def _put_shard(self, group: GroupRecord, number: int, existing: Obj | None, users: list[str],
                         groups: list[str]) -> Obj:
        name = shard_name(group.id, number)
        spec = {"group": group.id, "shard": number, "users": users, "groups": groups}
        if existing is None:
            body = self._object(SHARD.kind, name, spec)
            body["metadata"]["labels"] = {LABEL_GROUP: group.id}
            body["metadata"]["ownerReferences"] = [{
                "apiVersion": API_VERSION, "kind": GROUP.kind, "name": group.id,
                "uid": group.obj["metadata"]["uid"], "blockOwnerDeletion": True,
            }]
            obj = await self._create(SHARD.plural, body, conflict_is_stale=True)
        else:
            obj = await self._replace(SHARD.plural, name, self._object(SHARD.kind, name, spec, base=existing))
        self.shards.apply(obj)
        return obj

    async def _restore_shards(self, group: GroupRecord, written: list[tuple[int, Obj | None, Obj]]) -> None:
        for number, before, after in reversed(written):
            try:
                if before is None:
                    await self._delete(SHARD.plural, after["metadata"]["name"], after)
                    self.shards.forget(after["metadata"]["name"])
                else:
                    restored = dict(before)
                    restored["metadata"] = {**before["metadata"],
                                            "resourceVersion": after["metadata"]["resourceVersion"]}
                    self.shards.apply(await self._replace(SHARD.plural, before["metadata"]["name"], restored))
            except Exception:
                log.warning("could not undo the write of shard %d of group %s", number, group.id)

    async def _drop_member(self, member: str) -> None:
        """Remove a deleted user or group from every group listing it (one shard per group)."""
        # Another replica may just have added the member somewhere: look at the current shards.
        await self.fresh(self.shards)
        number = shard_of(member)
        for gid in sorted(self.group_ids_of(member)):
            for attempt in range(5):
                group = await self.load_group(gid, fresh=attempt > 0)
                if group is None:
                    break
                existing = group.shards.get(number)
                if existing is None:
                    break
                spec = existing["spec"]
                users = [m for m in spec.get("users") or [] if m != member]
                groups = [m for m in spec.get("groups") or [] if m != member]
                try:
                    await self._put_shard(group, number, existing, users, groups)
                    break
                except Stale:
                    continue

    # ---- name claims ----------------------------------------------------------------------------
    async def _claim(self, kind: str, value: str, owner: str) -> None:
        name = claim_name(kind, value)
        body = self._object(CLAIM.kind, name, {"resourceKind": kind, "value": value, "owner": owner})
        body["metadata"]["annotations"] = {ANNOTATION_CLAIMED_AT: clock.rfc3339()}
        what = "userName" if kind == "User" else "displayName"
        for _ in range(3):
            try:
                await self._create(CLAIM.plural, body, conflict_is_stale=True)
                return
            except Stale:
                pass
            existing = await self._get(CLAIM.plural, name)
            if existing is None:
                continue
            if existing["spec"].get("owner") == owner:
                return
            if not await self._claim_is_stale(existing):
                raise conflict(f"{what} {value!r} is already taken")
            taken = dict(existing)
            taken["spec"] = body["spec"]
            taken["metadata"] = {**existing["metadata"], "annotations": {
                **(existing["metadata"].get("annotations") or {}), ANNOTATION_CLAIMED_AT: clock.rfc3339()}}
            try:
                await self._replace(CLAIM.plural, name, taken)
                log.info("took over stale %s claim %s", kind, name)
                return
            except Stale:
                raise conflict(f"{what} {value!r} is already taken") from None
        raise conflict(f"{what} {value!r} is already taken")

    async def _claim_is_stale(self, claim: Obj) -> bool:
        """A claim can be taken over when its owner is gone or holds another value, and it is old
        enough that its owner cannot be a write still in flight."""
        md = claim["metadata"]
        stamp = clock.parse((md.get("annotations") or {}).get(ANNOTATION_CLAIMED_AT) or md.get("creationTimestamp"))
        if stamp is None or (datetime.now(UTC) - stamp).total_seconds() < CLAIM_GRACE:
            return False
        spec = claim["spec"]
        plural, attr = (USER.plural, "userName") if spec["resourceKind"] == "User" else (GROUP.plural, "displayName")
        owner = await self._get(plural, spec["owner"])
        if owner is None:
            return True
        held = str(owner["spec"].get(attr, ""))
        return held.casefold() != str(spec["value"]).casefold()

    async def _release(self, kind: str, value: str, owner: str) -> None:
        name = claim_name(kind, value)
        try:
            existing = await self._get(CLAIM.plural, name)
            if existing is not None and existing["spec"].get("owner") == owner:
                await self._delete(CLAIM.plural, name, existing)
        except Exception:
            # A leftover claim is recovered later: its owner no longer holds the value (stale).
            log.warning("could not release %s claim %s", kind, name)

    # ---- API calls ------------------------------------------------------------------------------
    def _object(self, kind: str, name: str, spec: dict[str, Any], base: Obj | None = None) -> Obj:
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace}
        if base is not None:
            # managedFields are sent back as read: an update without them costs the API server about
            # twice as long (it rebuilds them), measured on the member-shard rewrite path.
            metadata = dict(base["metadata"])
        if kind in (USER.kind, GROUP.kind):
            metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION_LAST_MODIFIED: clock.rfc3339()}
            if base is None:
                metadata["finalizers"] = [FINALIZER]
        return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}

    async def _get(self, plural: str, name: str) -> Obj | None:
        try:
            obj: Obj = await self.api.get_namespaced_custom_object(API_GROUP, VERSION, self.namespace, plural, name)
            # An object waiting on a finalizer is deleted as far as SCIM is concerned.
            return None if terminating(obj) else obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, plural) from None

    async def _create(self, plural: str, body: Obj, *, conflict_is_stale: bool = False) -> Obj:
        try:
            obj: Obj = await self.api.create_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, plural, body
            )
            return obj
        except ApiException as exc:
            if exc.status == 409 and conflict_is_stale:
                raise Stale(plural) from None
            raise _api_error(exc, plural) from None

    async def _replace(self, plural: str, name: str, body: Obj) -> Obj:
        try:
            obj: Obj = await self.api.replace_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, plural, name, body
            )
            return obj
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Stale(plural) from None
            raise _api_error(exc, plural) from None

    async def _delete(self, plural: str, name: str, current: Obj | None) -> None:
        body = client.V1DeleteOptions()
        if current is not None:
            body.preconditions = client.V1Preconditions(uid=current["metadata"]["uid"])
        try:
            await self.api.delete_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, plural, name, body=body
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise Stale(plural) from None
            raise _api_error(exc, plural) from None


def _keep_order(stored: list[str], wanted: list[str]) -> list[str]:
    wanted_set = set(wanted)
    kept = [m for m in stored if m in wanted_set]
    kept_set = set(kept)
    return kept + [m for m in wanted if m not in kept_set]


def sorted_by_creation(objects: Iterable[Obj]) -> Iterator[Obj]:
    """Stable order across pages: creation time, then name (ids are random, so ties are rare)."""
    return iter(sorted(objects, key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"])))


__all__ = ["GroupRecord", "Stale", "Store", "Unavailable", "UserRecord", "rv_of", "sorted_by_creation"]
