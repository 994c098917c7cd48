"""SCIM users and groups stored as custom resources, read from watch-backed copies.

One API for both, keyed by a :class:`Collection` (``USERS``, ``GROUPS``): what differs between them is
data there (the custom resource, the unique attribute, the indexed fields, whether members are kept),
not code. One ScimUser / ScimGroup per resource (the SCIM id is the object name). A group's members live in up
to ``SHARDS`` ScimMemberShard objects, so changing one member rewrites one small shard. userName and
group displayName (and, with ``unique_group_external_id``, a group's externalId) are reserved by
ScimNameClaim objects whose names derive from the folded value (the externalId: as written): the API
server's "already exists" decides a race between replicas.

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
import bisect
import contextlib
import hashlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
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
    ResourceKind,
    claim_name,
    fold,
    shard_name,
    shard_of,
)
from scim_endpoint.errors import ScimError, conflict
from scim_endpoint.informer import CustomObject, CustomObjectWithFields, Informer, Obj, terminating
from scim_endpoint.limits import object_too_large

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




@dataclass(frozen=True, eq=False)
class Collection:
    """A SCIM resource type as the store keeps it."""

    # The SCIM resource type: meta.resourceType, and the resourceKind of its name claims.
    name: str
    kind: ResourceKind
    # The spec field kept unique (case-insensitively) by ScimNameClaims.
    unique: str
    # Spec fields looked up by value from an index: field -> whether the value is case-folded.
    indexes: Mapping[str, bool]
    # The copies a rendered resource is read from (its own, the member shards, the groups' names).
    reads: tuple[str, ...]
    # Members are kept in ScimMemberShards.
    members: bool = False


USERS = Collection("User", USER, "userName", {"userName": True, "externalId": False},
                   reads=(USER.plural, SHARD.plural, GROUP.plural))
GROUPS = Collection("Group", GROUP, "displayName", {"displayName": True},
                    reads=(GROUP.plural, SHARD.plural), members=True)
COLLECTIONS = {c.name: c for c in (USERS, GROUPS)}


@dataclass
class Record:
    id: str
    spec: dict[str, Any]
    meta: dict[str, Any]
    obj: Obj = field(repr=False)
    # shard number -> shard object, for the shards that exist (a group's members)
    shards: dict[int, Obj] = field(default_factory=dict, repr=False)

    def members(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for number in sorted(self.shards):
            spec = self.shards[number]["spec"]
            out.extend({"value": m, "type": "User"} for m in spec.get("users") or [])
            out.extend({"value": m, "type": "Group"} for m in spec.get("groups") or [])
        return out


def _meta(coll: Collection, obj: Obj, shards: dict[int, Obj]) -> dict[str, Any]:
    md = obj["metadata"]
    created = md.get("creationTimestamp")
    modified = (md.get("annotations") or {}).get(ANNOTATION_LAST_MODIFIED) or created
    if not coll.members:
        return {"resourceType": coll.name, "created": created, "lastModified": modified,
                "version": f'W/"{md.get("generation", 1)}"'}
    stamps = [modified, *(_last_write(s) for s in shards.values())]
    # The version must move when a member changes, and members live in the shards.
    digest = hashlib.sha256(str(md.get("generation", 1)).encode())
    for number in sorted(shards):
        digest.update(f"|{number}:{shards[number]['metadata'].get('generation', 1)}".encode())
    return {
        "resourceType": coll.name,
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
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except (TypeError, ValueError, AttributeError):
        message = ""
    if exc.status == 413 or "request is too large" in message:
        # etcd refuses an object over its request limit (1.5 MiB by default) with a 500: the client's
        # data, so a 400 the IdP does not retry, not a 503 it retries forever.
        return object_too_large(what, "the 1.5 MiB Kubernetes stores in one object")
    if exc.status == 422:
        # The CRD schema rejected a value (too long, wrong type): the client's input, not us.
        detail = message.split(": ", 1)[-1] if message else f"invalid {what}"
        return ScimError(400, f"Invalid {what}: {detail}", "invalidValue")
    log.warning("Kubernetes API error on %s: %s %s", what, exc.status, exc.reason)
    return Unavailable(f"Kubernetes API error ({exc.status}) on {what}")


class Store:
    def __init__(self, api: client.ApiClient, namespace: str, *, unique_group_external_id: bool = False) -> None:
        self.namespace = namespace
        self.api = client.CustomObjectsApi(api)
        # collection name -> the spec fields held unique by name claims (the first: ``Collection.unique``)
        self._unique: dict[str, tuple[str, ...]] = {c.name: (c.unique,) for c in COLLECTIONS.values()}
        if unique_group_external_id:
            # Under the externalId team strategy a group's externalId names its LiteLLM team.
            self._unique[GROUPS.name] += ("externalId",)

        def lister(plural: str) -> Any:
            return partial(self.api.list_namespaced_custom_object, API_GROUP, VERSION, namespace, plural)

        # Users and groups are read without their managedFields (nothing here needs them); member
        # shards keep them: a shard's last write time comes from them, and a rewrite that sends them
        # back costs the API server about half as much.
        self.users = Informer(USER.plural, lister(USER.plural), shape=CustomObject)
        self.groups = Informer(GROUP.plural, lister(GROUP.plural), shape=CustomObject)
        self.shards = Informer(SHARD.plural, lister(SHARD.plural), shape=CustomObjectWithFields)
        self._by_plural = {i.kind: i for i in self._informers()}
        # collection name -> indexed spec field -> value -> name(s)
        self._indexes: dict[str, dict[str, dict[str, Names]]] = {
            c.name: {f: {} for f in c.indexes} for c in COLLECTIONS.values()}
        self._orders = {c.name: Order() for c in COLLECTIONS.values()}
        self._group_shards: dict[str, dict[int, str]] = {}
        self._member_of: dict[str, Names] = {}
        # Members whose id is not in folded form (``fold``), by the folded form (empty while every id
        # is a lower-case UUID): member values compare case-insensitively in filters.
        self._odd_case: dict[str, Names] = {}
        for coll in COLLECTIONS.values():
            self.informer(coll).listeners.append(partial(self._index, coll))
            self.informer(coll).listeners.append(self._orders[coll.name].changed)
        self.shards.listeners.append(self._index_shard)
        self._revision_task: asyncio.Task[int] | None = None

    def informer(self, coll: Collection) -> Informer:
        return self._by_plural[coll.kind.plural]

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
    def _move(index: dict[str, Names], old: str | None, new: str | None, name: str) -> None:
        # Almost every value names one resource: it is kept as the bare name, several as a tuple
        # (a set costs 200 bytes, times 100,000 users and three indexes).
        if old == new:
            return
        if old is not None:
            held = index.get(old)
            if held == name:
                del index[old]
            elif isinstance(held, tuple):
                rest = tuple(n for n in held if n != name)
                index[old] = rest[0] if len(rest) == 1 else rest
        if new is not None:
            name = sys.intern(name)
            held = index.get(new)
            if held is None:
                index[sys.intern(new)] = name
            elif isinstance(held, tuple):
                if name not in held:
                    index[new] = (*held, name)
            elif held != name:
                index[new] = (held, name)

    def _index(self, coll: Collection, name: str, old: Obj | None, new: Obj | None) -> None:
        for spec_field, folded in coll.indexes.items():
            self._move(self._indexes[coll.name][spec_field], _index_key(old, spec_field, folded),
                       _index_key(new, spec_field, folded), name)

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
            if member not in self._member_of and member != fold(member):
                self._move(self._odd_case, fold(member), None, member)
        for member in after - before:
            if member not in self._member_of and member != fold(member):
                self._move(self._odd_case, None, fold(member), member)
            self._move(self._member_of, None, member, group)

    # ---- reads from the copies ------------------------------------------------------------------
    async def fresh(self, *informers: Informer) -> None:
        """Wait until the copies include every write acknowledged before this call (see module doc)."""
        revision = await self._current_revision()
        await asyncio.gather(*(i.wait_for(revision, WATCH_QUIET, WATCH_TIMEOUT) for i in informers))

    async def fresh_for(self, coll: Collection) -> None:
        """``fresh`` for the copies a resource of ``coll`` is rendered from."""
        await self.fresh(*(self._by_plural[plural] for plural in coll.reads))

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

    def get(self, coll: Collection, rid: str) -> Record | None:
        obj = self.informer(coll).objects.get(rid)
        return self.record(coll, obj) if obj else None

    def record(self, coll: Collection, obj: Obj) -> Record:
        rid = obj["metadata"]["name"]
        shards = {}
        if coll.members:
            for number, name in self._group_shards.get(rid, {}).items():
                shard = self.shards.objects.get(name)
                if shard is not None:
                    shards[number] = shard
        return Record(rid, obj["spec"], _meta(coll, obj, shards), obj, shards)

    def lookup(self, coll: Collection, spec_field: str, value: str) -> set[str]:
        """Names of the resources whose indexed ``spec_field`` holds ``value``."""
        key = fold(value) if coll.indexes[spec_field] else value
        return _names(self._indexes[coll.name][spec_field].get(key))

    def holding(self, member: str) -> set[str]:
        """Ids of the groups listing ``member`` in any letter case (a superset is fine: the filter
        still decides)."""
        folded = fold(member)
        keys = {member, folded} | _names(self._odd_case.get(folded))
        return set().union(*(_names(self._member_of.get(k)) for k in keys))

    def order(self, coll: Collection) -> Order:
        """The names of ``coll`` in listing order (that of ``sorted_by_creation``)."""
        return self._orders[coll.name]

    def user_groups(self, uid: str) -> list[dict[str, str]]:
        """The user's direct groups, for the read-only ``groups`` attribute."""
        out = []
        for gid in sorted(_names(self._member_of.get(uid))):
            group = self.groups.objects.get(gid)
            if group is not None:
                out.append({"value": gid, "display": group["spec"].get("displayName", ""), "type": "direct"})
        return out

    # ---- loads for writes: the copy, or the API server when the copy may be stale ---------------
    async def load(self, coll: Collection, rid: str, *, fresh: bool = False) -> Record | None:
        if not _NAME.match(rid):
            return None
        informer = self.informer(coll)
        if not fresh and rid in informer.objects:
            return self.get(coll, rid)
        obj = await self._get(coll.kind.plural, rid)
        if obj is None:
            return None
        informer.apply(obj)
        if coll.members:
            try:
                resp = await self.api.list_namespaced_custom_object(
                    API_GROUP, VERSION, self.namespace, SHARD.plural, label_selector=f"{LABEL_GROUP}={rid}",
                    _preload_content=False,
                )
                body = json.loads(await resp.read())
            except ApiException as exc:
                raise _api_error(exc, "group members") from None
            for shard in body.get("items") or []:
                self.shards.apply(shard)
        return self.record(coll, informer.objects.get(rid, obj))

    # ---- writes ---------------------------------------------------------------------------------
    async def create(self, coll: Collection, spec: dict[str, Any],
                     members: list[dict[str, Any]] | None = None) -> Record:
        """Create a resource, holding the name claim of its unique value, with its members when its
        collection keeps them."""
        rid = str(uuid.uuid4())
        claims = await self._claim_all(coll, self._claims(coll, spec), rid)
        try:
            obj = await self._create(coll.kind.plural, self._object(coll.kind.kind, rid, spec))
        except BaseException:
            await self._release_all(coll, claims, rid)
            raise
        self.informer(coll).apply(obj)
        if coll.members:
            record = self.record(coll, obj)
            try:
                await self._write_members(record, members or [])
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._delete_objects(coll, record)
                raise
        return self.record(coll, obj)

    async def update(self, coll: Collection, current: Record, spec: dict[str, Any],
                     members: list[dict[str, Any]] | None = None) -> Record:
        """Write a resource's new spec (when it differs) and, when not None, its complete new member
        list; only the shards whose content changes are rewritten. A new unique value is claimed
        first and the old one released last."""
        old_claims, new_claims = self._claims(coll, current.spec), self._claims(coll, spec)
        taken = await self._claim_all(coll, {k: v for k, v in new_claims.items() if k not in old_claims}, current.id)
        informer = self.informer(coll)
        written: list[tuple[int, Obj | None, Obj]] = []
        try:
            if members is not None:
                written = await self._write_members(current, members)
            obj = current.obj
            if spec != current.spec:
                body = self._object(coll.kind.kind, current.id, spec, base=current.obj)
                obj = await self._replace(coll.kind.plural, current.id, body)
                informer.apply(obj)
        except BaseException:
            await self._restore_shards(current, written)
            await self._release_all(coll, taken, current.id)
            raise
        await self._release_all(coll, {k: v for k, v in old_claims.items() if k not in new_claims}, current.id)
        return self.record(coll, informer.objects.get(current.id, obj))

    async def delete(self, coll: Collection, current: Record) -> None:
        await self._delete_objects(coll, current)
        await self._drop_member(current.id)

    async def _delete_objects(self, coll: Collection, current: Record) -> None:
        await self._delete(coll.kind.plural, current.id, current.obj)
        self.informer(coll).forget(current.id)
        # Shards are owned by the group, but not every cluster runs a garbage collector.
        for shard in current.shards.values():
            name = shard["metadata"]["name"]
            with contextlib.suppress(Stale):
                await self._delete(SHARD.plural, name, None)
            self.shards.forget(name)
        await self._release_all(coll, self._claims(coll, current.spec), current.id)

    async def _write_members(self, current: Record, members: list[dict[str, Any]]) -> list[
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

    async def _put_shard(self, group: Record, number: int, existing: Obj | None, users: list[str],
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

    async def _restore_shards(self, group: Record, written: list[tuple[int, Obj | None, Obj]]) -> None:
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
        for gid in sorted(_names(self._member_of.get(member))):
            for attempt in range(5):
                group = await self.load(GROUPS, gid, fresh=attempt > 0)
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
    def _claims(self, coll: Collection, spec: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
        """claim name -> (spec field, value) of every value of ``spec`` that must be unique."""
        out = {}
        for spec_field in self._unique[coll.name]:
            value = spec.get(spec_field)
            if isinstance(value, str) and value:
                attribute = None if spec_field == coll.unique else spec_field
                out[claim_name(coll.name, value, attribute)] = (spec_field, value)
        return out

    async def _claim_all(self, coll: Collection, claims: dict[str, tuple[str, str]],
                         owner: str) -> dict[str, tuple[str, str]]:
        """Take the claims, all or none; returns those taken."""
        taken: dict[str, tuple[str, str]] = {}
        try:
            for name, (spec_field, value) in claims.items():
                await self._claim(coll, name, spec_field, value, owner)
                taken[name] = (spec_field, value)
        except BaseException:
            await self._release_all(coll, taken, owner)
            raise
        return taken

    async def _release_all(self, coll: Collection, claims: dict[str, tuple[str, str]], owner: str) -> None:
        for name in claims:
            await self._release(coll, name, owner)

    async def _claim(self, coll: Collection, name: str, what: str, value: str, owner: str) -> None:
        spec = {"resourceKind": coll.name, "value": value, "owner": owner}
        if what != coll.unique:
            spec["attribute"] = what
        body = self._object(CLAIM.kind, name, spec)
        body["metadata"]["annotations"] = {ANNOTATION_CLAIMED_AT: clock.rfc3339()}
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
                log.info("took over stale %s claim %s", coll.name, name)
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
        coll = COLLECTIONS[spec["resourceKind"]]
        owner = await self._get(coll.kind.plural, spec["owner"])
        if owner is None:
            return True
        attribute = spec.get("attribute")
        held = str(owner["spec"].get(attribute or coll.unique, ""))
        if attribute:  # case-exact
            return held != str(spec["value"])
        return fold(held) != fold(str(spec["value"]))

    async def _release(self, coll: Collection, name: str, owner: str) -> None:
        try:
            existing = await self._get(CLAIM.plural, name)
            if existing is not None and existing["spec"].get("owner") == owner:
                await self._delete(CLAIM.plural, name, existing)
        except Exception:
            # A leftover claim is recovered later: its owner no longer holds the value (stale).
            log.warning("could not release %s claim %s", coll.name, name)

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


Names = str | tuple[str, ...]


def _names(held: Names | None) -> set[str]:
    if held is None:
        return set()
    return {held} if isinstance(held, str) else set(held)


class Order:
    """The names of one collection in listing order (creation time, then name), so that a page of
    an unfiltered list is a slice: the same cost at any startIndex.

    Kept as a sorted list of (creationTimestamp, name); one new resource is inserted in place, a
    burst (the initial list) is sorted once when next read, removals are filtered out at the next
    read."""

    def __init__(self) -> None:
        self._keys: list[tuple[str, str]] = []
        self._added: list[tuple[str, str]] = []
        self._removed: set[str] = set()
        # Timestamps have second resolution: thousands of resources share one string.
        self._stamps: dict[str, str] = {}

    def changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None:
            return  # the creation time never changes
        if new is None:
            self._removed.add(name)
            return
        if name in self._removed:
            self._settle()
        stamp = str(new["metadata"].get("creationTimestamp", ""))
        self._added.append((self._stamps.setdefault(stamp, stamp), name))

    def _settle(self) -> None:
        if self._removed:
            removed = self._removed
            self._keys = [k for k in self._keys if k[1] not in removed]
            self._added = [k for k in self._added if k[1] not in removed]
            self._removed = set()
        if self._added:
            if len(self._added) > 64:
                self._keys.extend(self._added)
                self._keys.sort()
            else:
                for key in self._added:
                    bisect.insort(self._keys, key)
            self._added = []

    def __len__(self) -> int:
        self._settle()
        return len(self._keys)

    def page(self, start: int, count: int) -> list[str]:
        """Names at positions ``start`` .. ``start + count - 1`` (0-based)."""
        self._settle()
        return [name for _, name in self._keys[start:start + count]]


def _index_key(obj: Obj | None, spec_field: str, folded: bool) -> str | None:
    if obj is None:
        return None
    value: str | None = fold(obj["spec"].get(spec_field, "")) if folded else obj["spec"].get(spec_field)
    return value


def _keep_order(stored: list[str], wanted: list[str]) -> list[str]:
    wanted_set = set(wanted)
    kept = [m for m in stored if m in wanted_set]
    kept_set = set(kept)
    return kept + [m for m in wanted if m not in kept_set]


def sorted_by_creation(objects: Iterable[Obj]) -> Iterator[Obj]:
    """Stable order across pages: creation time, then name (ids are random, so ties are rare)."""
    return iter(sorted(objects, key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"])))


__all__ = ["COLLECTIONS", "GROUPS", "USERS", "Collection", "Order", "Record", "Stale", "Store", "Unavailable",
           "sorted_by_creation"]
