"""The SCIM operations on users and groups: the protocol layer (convert, patch, filters) on top of
the Kubernetes store. HTTP stays in ``app.py``; this module knows nothing of requests."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from scim_endpoint import convert, filters, patch
from scim_endpoint.errors import ScimError, not_found
from scim_endpoint.informer import Obj, rv_of
from scim_endpoint.schema import LIST_URN
from scim_endpoint.store import GroupRecord, Stale, Store, UserRecord, sorted_by_creation

R = TypeVar("R", UserRecord, GroupRecord)

# A write based on a stale copy is retried from a fresh read this many times before giving up.
ATTEMPTS = 5

# The lookups identity providers send on every sync: answered from an index, then confirmed by the
# real filter (so the index only narrows, it never decides).
_EQ = re.compile(r'^\s*(userName|externalId|displayName|id)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


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
    def __init__(self, store: Store, max_results: int) -> None:
        self.store = store
        self.max_results = max_results
        # id -> (cache key, rendered SCIM resource); rendering 10,000 users per filter would dominate.
        self._user_views: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._group_views: dict[str, tuple[Any, dict[str, Any]]] = {}
        store.users.listeners.append(self._forget_user_view)
        store.groups.listeners.append(self._forget_group_view)

    def _forget_user_view(self, name: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self._user_views.pop(name, None)

    def _forget_group_view(self, name: str, old: Obj | None, new: Obj | None) -> None:
        if new is None:
            self._group_views.pop(name, None)

    # ---- rendering ------------------------------------------------------------------------------
    def render_user(self, rec: UserRecord, base_url: str) -> dict[str, Any]:
        groups = self.store.user_groups(rec.id)
        key = (rv_of(rec.obj), base_url, tuple((g["value"], g["display"]) for g in groups))
        cached = self._user_views.get(rec.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        meta = {**rec.meta, "location": f"{base_url}/Users/{rec.id}"}
        view = convert.user_to_scim(rec.spec, rec.id, meta, groups)
        self._user_views[rec.id] = (key, view)
        return view

    def render_group(self, rec: GroupRecord, base_url: str) -> dict[str, Any]:
        key = (rv_of(rec.obj), base_url, rec.meta["version"])
        cached = self._group_views.get(rec.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        meta = {**rec.meta, "location": f"{base_url}/Groups/{rec.id}"}
        view = convert.group_to_scim(rec.spec, rec.id, meta, rec.members())
        self._group_views[rec.id] = (key, view)
        return view

    # ---- reads ----------------------------------------------------------------------------------
    async def get_user(self, uid: str, base_url: str) -> dict[str, Any]:
        await self.store.fresh(self.store.users, self.store.shards, self.store.groups)
        rec = self.store.user(uid) or await self.store.load_user(uid)
        if rec is None:
            raise not_found(f"User {uid} not found")
        return self.render_user(rec, base_url)

    async def get_group(self, gid: str, base_url: str) -> dict[str, Any]:
        await self.store.fresh(self.store.groups, self.store.shards)
        rec = self.store.group(gid) or await self.store.load_group(gid)
        if rec is None:
            raise not_found(f"Group {gid} not found")
        return self.render_group(rec, base_url)

    def _user_candidates(self, expr: str | None) -> Iterable[Obj]:
        match = _EQ.match(expr or "")
        objects = self.store.users.objects
        if match:
            attr, value = match.group(1).lower(), _unescape(match.group(2))
            if attr == "username":
                return [objects[i] for i in self.store.users_named(value) if i in objects]
            if attr == "externalid":
                return [objects[i] for i in self.store.users_with_external_id(value) if i in objects]
            if attr == "id":
                return [objects[value]] if value in objects else []
        return list(objects.values())

    def _group_candidates(self, expr: str | None) -> Iterable[Obj]:
        match = _EQ.match(expr or "")
        objects = self.store.groups.objects
        if match:
            attr, value = match.group(1).lower(), _unescape(match.group(2))
            if attr == "displayname":
                return [objects[i] for i in self.store.groups_named(value) if i in objects]
            if attr == "id":
                return [objects[value]] if value in objects else []
        return list(objects.values())

    async def search(self, resource_types: list[str], query: Query, base_url: str) -> dict[str, Any]:
        store = self.store
        predicates: dict[str, Callable[[dict[str, Any]], bool] | None] = {}
        first_error: ScimError | None = None
        for rt in resource_types:
            try:
                predicates[rt] = filters.compile_filter(query.filter, rt) if query.filter else None
            except ScimError as exc:
                # Searching from the root: a filter naming a User-only attribute matches no Group.
                if len(resource_types) == 1:
                    raise
                first_error = first_error or exc
        if not predicates and first_error is not None:
            raise first_error
        await store.fresh(store.users, store.groups, store.shards)
        matched: list[tuple[str, dict[str, Any]]] = []
        for rt, predicate in predicates.items():
            if rt == "User":
                views = (self.render_user(store.user_record(o), base_url)
                         for o in sorted_by_creation(self._user_candidates(query.filter)))
            else:
                views = (self.render_group(store.group_record(o), base_url)
                         for o in sorted_by_creation(self._group_candidates(query.filter)))
            matched.extend((rt, v) for v in views if predicate is None or predicate(v))
        if query.sort_by:
            descending = query.sort_order == "descending"
            keys = {rt: filters.sort_key(query.sort_by, rt, descending=descending) for rt in predicates}
            matched.sort(key=lambda item: keys[item[0]](item[1]))
        total = len(matched)
        start = max(query.start_index, 1)
        count = self.max_results if query.count is None else max(0, min(query.count, self.max_results))
        page = matched[start - 1:start - 1 + count]
        out: dict[str, Any] = {"schemas": [LIST_URN], "totalResults": total, "itemsPerPage": len(page),
                               "startIndex": start}
        if count > 0:
            out["Resources"] = [filters.project(v, query.attributes, query.excluded, rt) for rt, v in page]
        return out

    # ---- users ----------------------------------------------------------------------------------
    async def create_user(self, body: Any, base_url: str) -> dict[str, Any]:
        user = convert.user_from_request(body)
        rec = await self.store.create_user(convert.user_to_spec(user))
        return self.render_user(rec, base_url)

    async def replace_user(self, uid: str, body: Any, base_url: str, match: str | None) -> dict[str, Any]:
        def change(current: dict[str, Any]) -> dict[str, Any]:
            return convert.user_to_spec(convert.user_from_request(body, current=current))

        return await self._update_user(uid, change, base_url, match)

    async def patch_user(self, uid: str, body: Any, base_url: str, match: str | None) -> dict[str, Any]:
        def change(current: dict[str, Any]) -> dict[str, Any]:
            return convert.user_to_spec(patch.apply_patch(current, body, "User"))

        return await self._update_user(uid, change, base_url, match)

    async def _update_user(self, uid: str, change: Callable[[dict[str, Any]], dict[str, Any]], base_url: str,
                           match: str | None) -> dict[str, Any]:
        for attempt in range(ATTEMPTS):
            rec = await _matching("User", uid, self.store.load_user, match, attempt)
            if rec is None:
                continue
            current = self.render_user(rec, base_url)
            spec = change(current)
            if spec == rec.spec:
                return current
            try:
                rec = await self.store.replace_user(rec, spec)
            except Stale:
                continue
            return self.render_user(rec, base_url)
        raise _busy("User", uid)

    async def delete_user(self, uid: str, match: str | None) -> None:
        for attempt in range(ATTEMPTS):
            rec = await _matching("User", uid, self.store.load_user, match, attempt)
            if rec is None:
                continue
            try:
                await self.store.delete_user(rec)
                return
            except Stale:
                continue
        raise _busy("User", uid)

    # ---- groups ---------------------------------------------------------------------------------
    def _typed(self, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Members the client sent without a type: a known group id is a Group, anything else a User."""
        out = []
        for member in members:
            kind = member.get("type")
            if kind not in ("User", "Group"):
                kind = "Group" if member["value"] in self.store.groups.objects else "User"
            out.append({"value": str(member["value"]), "type": kind})
        return out

    async def create_group(self, body: Any, base_url: str) -> dict[str, Any]:
        group = convert.group_from_request(body)
        rec = await self.store.create_group(convert.group_to_spec(group), self._typed(group.get("members") or []))
        return self.render_group(rec, base_url)

    async def replace_group(self, gid: str, body: Any, base_url: str, match: str | None) -> dict[str, Any]:
        def change(current: dict[str, Any]) -> dict[str, Any]:
            new = convert.group_from_request(body, current=current)
            new.setdefault("members", [])
            return new

        return await self._update_group(gid, change, base_url, match)

    async def patch_group(self, gid: str, body: Any, base_url: str, match: str | None) -> dict[str, Any]:
        def change(current: dict[str, Any]) -> dict[str, Any]:
            return patch.apply_patch(current, body, "Group")

        return await self._update_group(gid, change, base_url, match)

    async def _update_group(self, gid: str, change: Callable[[dict[str, Any]], dict[str, Any]], base_url: str,
                            match: str | None) -> dict[str, Any]:
        for attempt in range(ATTEMPTS):
            rec = await _matching("Group", gid, self.store.load_group, match, attempt)
            if rec is None:
                continue
            current = self.render_group(rec, base_url)
            new = change(current)
            spec = convert.group_to_spec(new)
            members = self._typed(new.get("members") or [])
            old_members = {(m["value"], m.get("type")) for m in rec.members()}
            changed_members = members if {(m["value"], m["type"]) for m in members} != old_members else None
            if spec == rec.spec and changed_members is None:
                return current
            try:
                rec = await self.store.update_group(rec, spec, changed_members)
            except Stale:
                continue
            return self.render_group(rec, base_url)
        raise _busy("Group", gid)

    async def delete_group(self, gid: str, match: str | None) -> None:
        for attempt in range(ATTEMPTS):
            rec = await _matching("Group", gid, self.store.load_group, match, attempt)
            if rec is None:
                continue
            try:
                await self.store.delete_group(rec)
                return
            except Stale:
                continue
        raise _busy("Group", gid)


async def _matching(kind: str, rid: str, load: Callable[..., Awaitable[R | None]], match: str | None,
                    attempt: int) -> R | None:
    """The record a write applies to, after the If-Match check; None when it must be read again.

    The cached copy may trail another replica's write, so a version mismatch on the first attempt is
    confirmed with a fresh read before the client gets 412."""
    rec = await load(rid, fresh=attempt > 0)
    if rec is None:
        raise not_found(f"{kind} {rid} not found")
    if match is not None and attempt == 0:
        try:
            if_match(match, rec.meta["version"])
        except ScimError:
            return None
    if_match(match, rec.meta["version"])
    return rec


def _busy(kind: str, rid: str) -> ScimError:
    return ScimError(409, f"{kind} {rid} is being changed concurrently; retry the request")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)
