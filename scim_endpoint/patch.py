"""SCIM PATCH (RFC 7644 section 3.5.2) over canonical SCIM dicts, with what identity providers send.

:func:`apply_patch` returns a new, validated canonical resource (the input is never changed); the
read-only attributes it was given (``id``, ``meta``, a user's ``groups``) are carried over as they were.
For a group the result's ``members`` is the complete new member list: the service compares it with the
stored one and rewrites only the member shards that change.

Semantics, RFC first, then the field:
- ``op`` and attribute names are case-insensitive (Entra sends ``Add``/``Replace``/``Remove``);
- ``add`` appends to multi-valued attributes without duplicating an existing value (members are the
  same member when their ``value`` is), merges into complex ones and sets simple ones;
- ``replace`` replaces a multi-valued attribute as a whole, merges the given sub-attributes into a
  single complex one (RFC 7644 section 3.5.2.3), and replaces the values a filter selects;
- ``remove`` needs a ``path`` (else 400 ``noTarget``); a ``value`` list on a multi-valued path removes
  those values (Entra's ``{"op":"Remove","path":"members","value":[{"value":id}]}``); a filter matching
  nothing removes nothing (section 3.5.2.2 asks no error, and a retried removal must succeed);
- ``add``/``replace`` through a filter that matches nothing creates the value when the filter is a
  conjunction of ``eq`` tests (Entra's ``emails[type eq "work"].value`` on a user with no work
  email); any other filter matching nothing is 400 ``noTarget``;
- a path-less ``add``/``replace`` value is a partial resource whose keys may be paths themselves
  (``"name.givenName"``, ``"urn:...:enterprise:2.0:User:department"``) or an extension URN holding an
  object; its ``id`` must be the resource's own (Okta sends it), ``schemas``/``meta`` are ignored;
- an explicit path to an unknown attribute is 400 ``invalidPath``; to a read-only one (``id``, ``meta``,
  ``groups``, ``members.display``...) 400 ``mutability``; removing a required attribute (``userName``,
  a group's ``displayName``) 400 ``invalidValue``; ``password`` is accepted and dropped;
- values are converted as in POST/PUT (string booleans, single-element manager arrays...), and a
  new ``primary: true`` value clears ``primary`` on the others (RFC 7643 section 2.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scim2_models import Path, SCIMException
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Present,
    ValuePath,
)

from scim_endpoint import convert
from scim_endpoint.errors import ScimError
from scim_endpoint.filters import Predicate, element_filter
from scim_endpoint.limits import check_operation_count
from scim_endpoint.schema import PATCH_URN, Attr, ResourceSchema, resource_schema

_OPS = {"add", "replace", "remove"}
_PASSTHROUGH = {"User": ("id", "meta", "groups"), "Group": ("id", "meta")}


def _syntax(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidSyntax")


def _bad_path(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidPath")


def _mutability(detail: str) -> ScimError:
    return ScimError(400, detail, "mutability")


def _no_target(detail: str) -> ScimError:
    return ScimError(400, detail, "noTarget")


@dataclass(frozen=True)
class _Target:
    text: str
    ext: str | None
    attr: Attr
    sub: Attr | None = None
    select: Predicate | None = None
    template: dict[str, Any] | None = None  # the value an unmatched eq-only filter describes


def operations(body: Any, max_operations: int | None = None) -> list[tuple[str, str | None, Any, bool]]:
    """The validated (op, path, value, has_value) list of a PatchOp body; 400 invalidSyntax otherwise,
    400 tooMany for more than ``max_operations`` operations."""
    if not isinstance(body, dict):
        raise _syntax("a PATCH body must be a JSON object")
    lowered = {str(k).lower(): v for k, v in body.items()}
    declared = lowered.get("schemas")
    if not isinstance(declared, list) or PATCH_URN.lower() not in {str(s).lower() for s in declared}:
        raise _syntax(f"a PATCH body must declare schemas [{PATCH_URN!r}]")
    ops = lowered.get("operations")
    if not isinstance(ops, list) or not ops:
        raise _syntax("a PATCH body needs a non-empty Operations list")
    if max_operations is not None:
        check_operation_count(len(ops), max_operations)
    out = []
    for i, raw in enumerate(ops):
        if not isinstance(raw, dict):
            raise _syntax(f"Operations[{i}] must be an object")
        op_fields = {str(k).lower(): v for k, v in raw.items()}
        op = op_fields.get("op")
        if not isinstance(op, str) or op.lower() not in _OPS:
            raise _syntax(f"Operations[{i}].op must be add, replace or remove, got {op!r}")
        path = op_fields.get("path")
        if path is not None and not isinstance(path, str):
            raise _bad_path(f"Operations[{i}].path must be a string")
        path = path.strip() if isinstance(path, str) and path.strip() else None
        has_value = "value" in op_fields
        if op.lower() != "remove" and not has_value:
            raise _syntax(f"Operations[{i}]: {op} needs a value")
        out.append((op.lower(), path, op_fields.get("value"), has_value))
    return out


def apply_patch(resource: dict[str, Any], body: dict[str, Any], resource_type: str, *,
                max_operations: int | None = None) -> dict[str, Any]:
    """Apply a PatchOp body to a canonical (or full SCIM) resource; returns a new validated canonical
    resource. Raises ScimError 400 (invalidSyntax, invalidPath, invalidValue, mutability, noTarget)."""
    schema = resource_schema(resource_type)
    ops = operations(body, max_operations)
    work = _clone(resource)
    patcher = _Patcher(schema, resource)
    for op, path, value, has_value in ops:
        patcher.apply(work, op, path, value, has_value)
    return _revalidate(work, resource, resource_type)


def _clone(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A copy deep enough for PATCH: canonical values nest at most three levels (extension → manager →
    scalars) and copy.deepcopy of a 50,000-member group costs more than the rest of the request."""

    def one(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        if isinstance(value, list):
            return [dict(v) if isinstance(v, dict) else v for v in value]
        return value

    return {k: one(v) for k, v in resource.items()}


def _revalidate(work: dict[str, Any], original: Mapping[str, Any], resource_type: str) -> dict[str, Any]:
    kept = {k: original[k] for k in _PASSTHROUGH[resource_type] if k in original}
    body = {k: v for k, v in work.items() if k not in kept}
    body["schemas"] = [resource_schema(resource_type).core_urn]
    result = convert.from_request(body, resource_type)
    out = {"schemas": result.pop("schemas")}
    if "id" in kept:
        out["id"] = kept.pop("id")
    out.update(result)
    out.update(kept)
    return out


class _Patcher:
    def __init__(self, schema: ResourceSchema, original: Mapping[str, Any]) -> None:
        self.schema = schema
        self.original = original

    # --- path resolution --------------------------------------------------------------------------

    def target(self, text: str) -> _Target:
        try:
            node = Path(text).ast
        except (SCIMException, ValueError) as exc:
            raise _bad_path(f"invalid path {text!r}: {exc}") from None
        if isinstance(node, (Comparison, Present)):
            node = _as_value_path(node)
        if isinstance(node, AttrPath):
            ext, attr = self._attribute(node, text)
            sub = self._sub(attr, node.sub_attr, text) if node.sub_attr else None
            return _Target(text, ext, attr, sub)
        if isinstance(node, ValuePath):
            ext, attr = self._attribute(node.attr_path, text)
            if not attr.is_complex or not attr.multi_valued:
                raise _bad_path(f"{text!r}: only multi-valued complex attributes take a value filter")
            try:
                select = element_filter(attr, node.val_filter)
            except ScimError as exc:
                raise _bad_path(f"invalid filter in path {text!r}: {exc.detail}") from None
            sub = self._sub(attr, node.sub_attr, text) if node.sub_attr else None
            template = _template(attr, node.val_filter)
            value_sub = attr.child("value")
            if template is not None and set(template) == {"value"} and value_sub and value_sub.case_exact:
                # members[value eq "id"], the most frequent path in the field, without the generic filter
                wanted = template["value"]
                select = lambda item: item.get("value") == wanted  # noqa: E731
            return _Target(text, ext, attr, sub, select, template)
        raise _bad_path(f"invalid path {text!r}")

    def _attribute(self, path: AttrPath, text: str) -> tuple[str | None, Attr]:
        found = self.schema.attribute(path.attr, path.uri)
        if found is None:
            raise _bad_path(f"no attribute {text!r} in {self.schema.name}")
        return found

    def _sub(self, attr: Attr, name: str, text: str) -> Attr:
        sub = attr.child(name) if attr.is_complex else None
        if sub is None:
            raise _bad_path(f"no attribute {text!r} in {self.schema.name}")
        return sub

    # --- operations -------------------------------------------------------------------------------

    def apply(self, work: dict[str, Any], op: str, path: str | None, value: Any, has_value: bool) -> None:
        if path is None:
            if op == "remove":
                raise _no_target("remove needs a path (RFC 7644 section 3.5.2.2)")
            self._pathless(work, op, value)
            return
        ext_urn = self.schema.extension_urn(path)
        if ext_urn is not None:  # the whole extension: its value is an object of its attributes
            if op == "remove":
                work.pop(ext_urn, None)
                return
            if not isinstance(value, dict):
                raise convert.invalid(f"{ext_urn} takes an object of its attributes")
            for key, sub_value in value.items():
                if self.schema.attribute(str(key), ext_urn) is not None:
                    self.apply_target(work, op, self.target(f"{ext_urn}:{key}"), sub_value, True)
            return
        self.apply_target(work, op, self.target(path), value, has_value)

    def _pathless(self, work: dict[str, Any], op: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise convert.invalid(f"{op} without a path takes an object of attributes")
        for key, item in value.items():
            key = str(key)
            lower = key.lower()
            if lower == "id":
                if item is not None and item != self.original.get("id"):
                    raise _mutability("id is read-only and cannot be changed")
                continue
            if lower in ("schemas", "meta"):
                continue
            if item is None and op == "add":
                continue
            ext_urn = self.schema.extension_urn(key)
            if ext_urn is not None:
                self.apply(work, op, ext_urn, item, True)
                continue
            try:
                target = self.target(key)
            except ScimError:
                continue  # unknown attributes in a partial resource are ignored, as in POST/PUT
            self.apply_target(work, op, target, item, True)

    def apply_target(self, work: dict[str, Any], op: str, t: _Target, value: Any, has_value: bool) -> None:
        attr = t.attr
        if attr.mutability == "writeOnly":
            return  # password: accepted, never stored
        if attr.read_only or (t.sub is not None and t.sub.read_only):
            raise _mutability(f"{t.text} is read-only")
        # An immutable value may only be added where there is none (RFC 7644 section 3.5.2); without a
        # filter, members.value would rewrite every member.
        immutable = t.sub is not None and t.sub.mutability == "immutable"
        if immutable and (op != "add" or (t.select is None and attr.multi_valued)):
            raise _mutability(f"{t.text} is immutable")
        if op != "remove" and value is None:
            op, has_value = "remove", False  # replace with null: unassign
            if attr.required and t.sub is None:
                raise convert.invalid(f"{attr.name} is required and cannot be null")
        container = self._container(work, t.ext, create=op != "remove")
        if container is None:
            return
        if op == "remove":
            self._remove(container, t, value if has_value else None)
        elif t.select is not None:
            self._set_selected(container, op, t, value)
        elif t.sub is not None:
            self._set_sub(container, t, value)
        elif attr.multi_valued:
            items = convert.normalize(attr, value, attr.name) or []
            if op == "replace":
                container[attr.name] = items
            else:
                current = container.setdefault(attr.name, [])
                seen = {_identity(i, attr) for i in current}
                added = []
                for item in items:
                    if _identity(item, attr) not in seen:  # already there: no change (section 3.5.2.1)
                        seen.add(_identity(item, attr))
                        added.append(item)
                current.extend(added)
                items = added
            _single_primary(container.get(attr.name), items)
        elif attr.is_complex:
            norm = convert.normalize(attr, value, attr.name) or {}
            current = container.get(attr.name)
            container[attr.name] = {**current, **norm} if isinstance(current, dict) else norm
        else:
            container[attr.name] = convert.normalize(attr, value, attr.name)
        if t.ext is not None and not work.get(t.ext):
            work.pop(t.ext, None)

    def _container(self, work: dict[str, Any], ext: str | None, *, create: bool) -> dict[str, Any] | None:
        if ext is None:
            return work
        holder = work.get(ext)
        if not isinstance(holder, dict):
            if not create:
                return None
            holder = work[ext] = {}
        return holder

    def _set_sub(self, container: dict[str, Any], t: _Target, value: Any) -> None:
        assert t.sub is not None
        norm = convert.normalize(t.sub, value, f"{t.attr.name}.{t.sub.name}")
        if t.attr.multi_valued:
            items = container.setdefault(t.attr.name, [])
            if not items:
                items.append({})
            for item in items:
                item[t.sub.name] = norm
            if t.sub.name == "primary" and norm is True and len(items) > 1:
                raise convert.invalid(f"{t.text}: only one value may be primary")
        else:
            current = container.get(t.attr.name)
            container[t.attr.name] = {**(current if isinstance(current, dict) else {}), t.sub.name: norm}

    def _set_selected(self, container: dict[str, Any], op: str, t: _Target, value: Any) -> None:
        assert t.select is not None
        items: list[dict[str, Any]] = container.setdefault(t.attr.name, [])
        matched = [item for item in items if isinstance(item, dict) and t.select(item)]
        if not matched:
            if t.template is None:
                raise _no_target(f"{t.text} matches no value")
            created = dict(t.template)
            items.append(created)
            matched = [created]
        if t.sub is not None:
            norm = convert.normalize(t.sub, value, f"{t.attr.name}.{t.sub.name}")
            for item in matched:
                if t.sub.mutability == "immutable" and item.get(t.sub.name) not in (None, norm):
                    raise _mutability(f"{t.text} is immutable and already set")
                item[t.sub.name] = norm
            if t.sub.name == "primary" and norm is True:
                _single_primary(items, matched)
            return
        new = convert.normalize(t.attr, value, t.attr.name) or []
        if len(new) != 1:
            raise convert.invalid(f"{t.text} takes one value, got {len(new)}")
        for item in matched:
            if op == "replace":
                item.clear()
            item.update(new[0])
        _single_primary(items, matched)

    def _remove(self, container: dict[str, Any], t: _Target, value: Any) -> None:
        attr = t.attr
        if attr.required and t.sub is None and t.select is None:
            raise convert.invalid(f"{attr.name} is required and cannot be removed")
        current = container.get(attr.name)
        if current is None:
            return
        if t.select is not None:
            kept = []
            for item in current:
                if isinstance(item, dict) and t.select(item):
                    if t.sub is None:
                        continue
                    item.pop(t.sub.name, None)
                    if not item:
                        continue
                kept.append(item)
            container[attr.name] = kept
        elif t.sub is not None:
            for item in current if isinstance(current, list) else [current]:
                if isinstance(item, dict):
                    item.pop(t.sub.name, None)
        elif attr.multi_valued and value is not None:
            gone = {_identity(v, attr) for v in convert.normalize(attr, value, attr.name) or []}
            container[attr.name] = [item for item in current if _identity(item, attr) not in gone]
        else:
            container.pop(attr.name, None)


def _as_value_path(node: Comparison | Present) -> ValuePath:
    """Errata 7122's ``emails.type eq "work"`` spelling of ``emails[type eq "work"]``."""
    path = node.attr_path
    inner = AttrPath(attr=path.sub_attr or "value")
    val_filter: FilterNode = (
        Comparison(attr_path=inner, op=node.op, value=node.value)
        if isinstance(node, Comparison)
        else Present(attr_path=inner)
    )
    return ValuePath(attr_path=AttrPath(attr=path.attr, uri=path.uri), val_filter=val_filter)


def _template(attr: Attr, node: FilterNode) -> dict[str, Any] | None:
    """The value ``attr[a eq 1 and b eq 2]`` describes, when the filter is only ``eq`` conjunctions."""
    terms = node.terms if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_ else (node,)
    out: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, Comparison) or term.op != CompareOperator.eq or term.value is None:
            return None
        sub = attr.child(term.attr_path.attr)
        if sub is None or term.attr_path.sub_attr is not None:
            return None
        try:
            out[sub.name] = convert.scalar(sub, term.value, f"{attr.name}.{sub.name}")
        except ScimError:
            return None
    return out


def _identity(item: Any, attr: Attr) -> Any:
    # A group member is identified by its id alone (clients echo display/type or not).
    if attr.name == "members" and isinstance(item, dict):
        return item.get("value")
    return convert.freeze(item)


def _single_primary(items: list[Any] | None, winners: list[Any]) -> None:
    """After adding/replacing ``winners``, only the last of them marked primary stays primary."""
    if not items:
        return
    primary = [w for w in winners if isinstance(w, dict) and w.get("primary") is True]
    if not primary:
        return
    keep = primary[-1]
    for item in items:
        if isinstance(item, dict) and item is not keep and item.get("primary") is True:
            item["primary"] = False
