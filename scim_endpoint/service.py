"""The SCIM operations, one path for every resource type (``resources``): the protocol layer (convert,
patch, filters) on top of the Kubernetes store. HTTP stays in ``app.py``; this module knows nothing
of requests."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from scim_endpoint import filters, limits, patch
from scim_endpoint.errors import ScimError, not_found
from scim_endpoint.informer import Obj, rv_of
from scim_endpoint.limits import Limits
from scim_endpoint.resources import TYPES, ResourceType
from scim_endpoint.schema import LIST_URN
from scim_endpoint.store import Record, Stale, Store, sorted_by_creation

T = TypeVar("T")

# A write based on a stale copy is retried from a fresh read this many times before giving up.
ATTEMPTS = 5
# A search hands the event loop back after working this long (seconds) at a stretch.
SLICE = 0.001

# The lookups identity providers send on every sync (userName, externalId, displayName, id): answered
# from an index of the type's collection, then confirmed by the real filter (so the index only
# narrows, it never decides).
# Rendered resources kept per type (least recently used dropped): a sync's working set, while
# 100,000 rendered users (about 4 KB each) would be most of the process's memory. Rendering a page
# of 100 uncached costs a few milliseconds.
VIEW_CACHE = 2_000

_EQ = re.compile(r'^\s*(\w+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)
# ``members[value eq "id"]`` / ``members.value eq "id"``: which groups hold a member (Okta asks it).
_MEMBER_EQ = re.compile(r'^\s*members\s*(?:\[\s*value\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\]|\.value\s+eq\s+'
                        r'"((?:[^"\\]|\\.)*)")\s*$', re.IGNORECASE)


@dataclass
class Query:
    filter: str | None = None
    start_index: int = 1
    count: int | None = None
    sort_by: str | None = None
    sort_order: str = "ascending"
    attributes: list[str] | None = None
    excluded: list[str] | None = None


def if_match(header: str | None, version: str) -> None:
    """RFC 7644 section 3.14: a precondition that names another version fails with 412."""
    if header is None:
        return
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if "*" in tags:
        return
    if version.removeprefix("W/") not in {t.removeprefix("W/") for t in tags}:
        raise ScimError(412, f"Resource version {version} does not match If-Match")


class Service:
    def __init__(self, store: Store, max_results: int, caps: Limits | None = None) -> None:
        self.store = store
        self.max_results = max_results
        self.limits = caps or Limits()
        # type -> id -> (cache key, rendered SCIM resource), least recently used first.
        self._views: dict[str, OrderedDict[str, tuple[Any, dict[str, Any]]]] = {
            rt.name: OrderedDict() for rt in TYPES}
        for rt in TYPES:
            store.informer(rt.collection).listeners.append(partial(self._forget_view, self._views[rt.name]))

    @staticmethod
    def _forget_view(views: dict[str, Any], name: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            views.pop(name, None)

    # ---- rendering ------------------------------------------------------------------------------
    def render(self, rt: ResourceType, rec: Record, base_url: str) -> dict[str, Any]:
        key = (rv_of(rec.obj), base_url, rt.related_version(self.store, rec))
        views = self._views[rt.name]
        cached = views.get(rec.id)
        if cached is not None and cached[0] == key:
            views.move_to_end(rec.id)
            return cached[1]
        meta = {**rec.meta, "location": f"{base_url}/{rt.endpoint}/{rec.id}"}
        view = rt.to_scim(rec.spec, rec.id, meta, rt.related(self.store, rec))
        views[rec.id] = (key, view)
        views.move_to_end(rec.id)
        if len(views) > VIEW_CACHE:
            views.popitem(last=False)
        return view

    # ---- reads ----------------------------------------------------------------------------------
    async def get(self, rt: ResourceType, rid: str, base_url: str) -> dict[str, Any]:
        await self.store.fresh_for(rt.collection)
        rec = self.store.get(rt.collection, rid) or await self.store.load(rt.collection, rid)
        if rec is None:
            raise not_found(f"{rt.name} {rid} not found")
        return self.render(rt, rec, base_url)

    def _candidates(self, rt: ResourceType, expr: str | None) -> Iterable[Obj]:
        match = _EQ.match(expr or "")
        objects = self.store.informer(rt.collection).objects
        if match:
            attr, value = match.group(1).lower(), _unescape(match.group(2))
            if attr == "id":
                return [objects[value]] if value in objects else []
            for spec_field in rt.collection.indexes:
                if attr == spec_field.lower():
                    return [objects[i] for i in self.store.lookup(rt.collection, spec_field, value) if i in objects]
        member = _MEMBER_EQ.match(expr or "")
        if member and rt.collection.members:
            value = _unescape(member.group(1) if member.group(1) is not None else member.group(2))
            return [objects[i] for i in self.store.holding(value) if i in objects]
        return list(objects.values())

    async def search(self, resource_types: Sequence[ResourceType], query: Query, base_url: str) -> dict[str, Any]:
        store = self.store
        predicates: dict[ResourceType, Callable[[dict[str, Any]], bool] | None] = {}
        first_error: ScimError | None = None
        for rt in resource_types:
            try:
                predicates[rt] = (filters.compile_filter(query.filter, rt.name, self.limits.max_filter_terms)
                                  if query.filter else None)
            except ScimError as exc:
                # Searching from the root: a filter naming a User-only attribute matches no Group.
                if len(resource_types) == 1:
                    raise
                first_error = first_error or exc
        if not predicates and first_error is not None:
            raise first_error
        await store.fresh(store.users, store.groups, store.shards)
        start = max(query.start_index, 1)
        count = self.max_results if query.count is None else max(0, min(query.count, self.max_results))
        # A filter of many terms over many resources takes a while: let health probes and other
        # clients' requests in between rather than hold the event loop throughout.
        slices = _Slices()
        if len(predicates) == 1 and query.filter is None and not query.sort_by:
            # The whole collection in listing order: page k is a slice of the kept order, rendered alone.
            rt = next(iter(predicates))
            order = store.order(rt.collection)
            total, names = len(order), order.page(start - 1, count)
            objects = store.informer(rt.collection).objects
            page = []
            for name in names:
                await slices.next()
                if name in objects:
                    page.append((rt, self.render(rt, store.record(rt.collection, objects[name]), base_url)))
            return await self._list_response(query, total, start, count, page, slices)
        matched: list[tuple[ResourceType, dict[str, Any]]] = []
        for rt, predicate in predicates.items():
            for obj in sorted_by_creation(self._candidates(rt, query.filter)):
                await slices.next()
                view = self.render(rt, store.record(rt.collection, obj), base_url)
                if predicate is None or predicate(view):
                    matched.append((rt, view))
        if query.sort_by:
            descending = query.sort_order == "descending"
            keys = {rt: filters.sort_key(query.sort_by, rt.name, descending=descending) for rt in predicates}
            matched.sort(key=lambda item: keys[item[0]](item[1]))
        page = matched[start - 1:start - 1 + count]
        return await self._list_response(query, len(matched), start, count, page, slices)

    @staticmethod
    async def _list_response(query: Query, total: int, start: int, count: int,
                             page: list[tuple[ResourceType, dict[str, Any]]], slices: _Slices) -> dict[str, Any]:
        out: dict[str, Any] = {"schemas": [LIST_URN], "totalResults": total, "itemsPerPage": len(page),
                               "startIndex": start}
        if count > 0:
            resources = []
            for rt, view in page:
                await slices.next()
                resources.append(filters.project(view, query.attributes, query.excluded, rt.name))
            out["Resources"] = resources
        return out

    # ---- writes ---------------------------------------------------------------------------------
    async def create(self, rt: ResourceType, body: Any, base_url: str) -> dict[str, Any]:
        resource = rt.from_request(body)
        spec = rt.to_spec(resource)
        limits.check_object_size(spec, rt.name, self.limits)
        rec = await self.store.create(rt.collection, spec, self._members(rt, resource))
        return self.render(rt, rec, base_url)

    async def replace(self, rt: ResourceType, rid: str, body: Any, base_url: str,
                      match: str | None) -> dict[str, Any]:
        return await self._update(rt, rid, lambda current: rt.from_request(body, current=current), base_url, match)

    async def patch(self, rt: ResourceType, rid: str, body: Any, base_url: str,
                    match: str | None) -> dict[str, Any]:
        return await self._update(rt, rid, lambda current: patch.apply_patch(
            current, body, rt.name, max_operations=self.limits.max_patch_operations), base_url, match)

    async def _update(self, rt: ResourceType, rid: str, change: Callable[[dict[str, Any]], dict[str, Any]],
                      base_url: str, match: str | None) -> dict[str, Any]:
        async def write(rec: Record) -> dict[str, Any]:
            current = self.render(rt, rec, base_url)
            new = change(current)
            spec = rt.to_spec(new)
            members = self._members(rt, new)
            if members is not None and _member_set(members) == _member_set(rec.members()):
                members = None
            if spec == rec.spec and members is None:
                return current
            limits.check_object_size(spec, rt.name, self.limits)
            return self.render(rt, await self.store.update(rt.collection, rec, spec, members), base_url)

        return await self._retrying(rt, rid, match, write)

    async def delete(self, rt: ResourceType, rid: str, match: str | None) -> None:
        async def write(rec: Record) -> None:
            await self.store.delete(rt.collection, rec)

        await self._retrying(rt, rid, match, write)

    async def _retrying(self, rt: ResourceType, rid: str, match: str | None,
                        write: Callable[[Record], Awaitable[T]]) -> T:
        """``write`` on the current record after the If-Match check, again from a fresh read whenever
        the copy it was based on turns out stale."""
        for attempt in range(ATTEMPTS):
            rec = await self._matching(rt, rid, match, attempt)
            if rec is None:
                continue
            try:
                return await write(rec)
            except Stale:
                continue
        raise ScimError(409, f"{rt.name} {rid} is being changed concurrently; retry the request")

    async def _matching(self, rt: ResourceType, rid: str, match: str | None, attempt: int) -> Record | None:
        """The record a write applies to, after the If-Match check; None when it must be read again.

        The cached copy may trail another replica's write, so a version mismatch on the first attempt is
        confirmed with a fresh read before the client gets 412."""
        rec = await self.store.load(rt.collection, rid, fresh=attempt > 0)
        if rec is None:
            raise not_found(f"{rt.name} {rid} not found")
        if match is not None and attempt == 0:
            try:
                if_match(match, rec.meta["version"])
            except ScimError:
                return None
        if_match(match, rec.meta["version"])
        return rec

    # ---- members --------------------------------------------------------------------------------
    def _members(self, rt: ResourceType, resource: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The complete member list of a resource whose type keeps members (None for other types).

        Members the client sent without a type: a known group id is a Group, anything else a User."""
        if not rt.collection.members:
            return None
        out = []
        for member in resource.get("members") or []:
            kind = member.get("type")
            if kind not in ("User", "Group"):
                kind = "Group" if member["value"] in self.store.groups.objects else "User"
            out.append({"value": str(member["value"]), "type": kind})
        return out


class _Slices:
    """Cuts a long computation into slices of at most ``SLICE`` seconds, handing the event loop
    back between them (one request's work then delays another by a slice, not by all of it)."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()

    async def next(self) -> None:
        if time.perf_counter() - self.mark >= SLICE:
            await asyncio.sleep(0)
            self.mark = time.perf_counter()


def _member_set(members: Iterable[dict[str, Any]]) -> set[tuple[str, str | None]]:
    return {(m["value"], m.get("type")) for m in members}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)
