"""Filtering (RFC 7644 section 3.4.2.2), sorting (3.4.2.3) and attribute projection (3.4.2.5, 3.9)
over canonical SCIM dicts (see ``convert``).

Parsing uses scim2-models' RFC 7644 grammar (``scim2_models.ScimFilter``/``Path``, with the errata
applied, Entra's ``emails[type eq "work"].value eq "x"`` included). scim2-filter-parser 0.7.0 was
not used: its parser gives ``and`` and ``or`` the same precedence, so ``a or b and c`` is read as
``(a or b) and c``, against the RFC. The evaluation is ours, over plain dicts, because the endpoint
filters its cache of thousands of resources per request and must not build a model per resource.

Rules:
- attribute names are case-insensitive; string comparisons follow the schema's ``caseExact``
  (``userName``, ``emails.value``, ``displayName`` ignore case; ``id``, ``externalId`` do not);
- a complex multi-valued attribute compared without a sub-attribute compares its ``value``
  (``members eq "id"``, ``emails co "@x"``); a multi-valued attribute matches when any value does;
- ``ne`` is the negation of ``eq`` (an absent attribute is ``ne`` anything); ``eq null`` is "absent";
- ``meta.created``/``meta.lastModified`` compare as instants, whatever the offset spelling;
- a filter that does not parse is retried once with bare words after an operator quoted
  (``userName sw O``, sent by Microsoft's reference suite); the result must parse in full;
- unknown attributes, ``password``, ordering operators on booleans/binaries/complex values, ``co``/
  ``sw``/``ew`` on non-strings and values of the wrong type are 400 ``invalidFilter``: a filter is
  either evaluated exactly or refused, never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from scim2_models import Path, SCIMException, ScimFilter
from scim2_models.path import (
    AttrPath,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)

from scim_contract import fold
from scim_endpoint.errors import ScimError
from scim_endpoint.limits import check_filter_terms
from scim_endpoint.schema import Attr, ResourceSchema, resource_schema

Predicate = Callable[[Mapping[str, Any]], bool]
Getter = Callable[[Mapping[str, Any]], list[Any]]


def invalid_filter(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


def parse_filter(expr: str) -> FilterNode:
    if not isinstance(expr, str) or not expr.strip():
        raise invalid_filter("the filter is empty")
    try:
        return ScimFilter(expr).ast
    except RecursionError:
        raise invalid_filter("the filter nests too deeply") from None
    except (SCIMException, ValueError) as exc:
        error = exc
    quoted = _quote_bare_values(expr)
    if quoted != expr:
        try:
            return ScimFilter(quoted).ast
        except (SCIMException, ValueError, RecursionError):
            pass
    raise invalid_filter(f"invalid filter {expr!r}: {error}")


def count_terms(node: FilterNode) -> int:
    """The comparisons and presence tests of a filter (iteratively: a filter may nest deeply)."""
    count, stack = 0, [node]
    while stack:
        item = stack.pop()
        if isinstance(item, LogicalExpr):
            stack.extend(item.terms)
        elif isinstance(item, Not):
            stack.append(item.expr)
        elif isinstance(item, ValuePath):
            stack.append(item.val_filter)
        else:
            count += 1
    return count


_SEGMENTS = re.compile(r'"(?:[^"\\]|\\.)*"|[^"]+|"')
_BARE_VALUE = re.compile(
    r"(?i)(\s(?:eq|ne|co|sw|ew|gt|ge|lt|le)\s+)"
    r"(?!(?:true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:[\s()\[\]]|$))([^\s\"()\[\]\\]+)"
)


def _quote_bare_values(expr: str) -> str:
    """``userName sw O`` → ``userName sw "O"``: Microsoft's reference suite sends unquoted strings and
    dates (``meta.created gt 2015-10-10T14:38:21.86-07:00``). Only tried when the filter does not parse
    as written, and only outside string literals; the result must still parse in full."""
    return "".join(
        part if part.startswith('"') else _BARE_VALUE.sub(lambda m: f'{m.group(1)}"{m.group(2)}"', part)
        for part in _SEGMENTS.findall(expr)
    )


@lru_cache(maxsize=512)
def compile_filter(expr: str, resource_type: str, max_terms: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A predicate over canonical SCIM dicts of ``resource_type`` ("User"|"Group").

    Raises ScimError 400 invalidFilter for anything it cannot evaluate exactly, or for more than
    ``max_terms`` terms (each one is evaluated against every candidate resource)."""
    schema = resource_schema(resource_type)
    node = parse_filter(expr)
    if max_terms is not None:
        check_filter_terms(count_terms(node), max_terms)
    try:
        return _compile(node, _ResourceScope(schema))
    except RecursionError:
        raise invalid_filter("the filter nests too deeply") from None


# --- attribute resolution ------------------------------------------------------------------------


class _ResourceScope:
    """Resolves attribute paths against a resource (top level)."""

    def __init__(self, schema: ResourceSchema) -> None:
        self.schema = schema

    def resolve(self, path: AttrPath) -> tuple[str | None, Attr]:
        found = resolve_attribute(self.schema, path.attr, path.uri)
        if found is None:
            raise invalid_filter(f"unknown attribute {path}")
        return found


class _ElementScope:
    """Resolves the sub-attribute names used inside a value filter ``attr[...]``."""

    def __init__(self, attr: Attr) -> None:
        self.attr = attr

    def resolve(self, path: AttrPath) -> tuple[str | None, Attr]:
        if path.uri is not None or path.sub_attr is not None:
            raise invalid_filter(f"{path} is not a sub-attribute of {self.attr.name}")
        sub = self.attr.child(path.attr)
        if sub is None:
            raise invalid_filter(f"{self.attr.name} has no sub-attribute {path.attr}")
        return None, sub


def resolve_attribute(schema: ResourceSchema, name: str, uri: str | None) -> tuple[str | None, Attr] | None:
    """(extension URN or None, attribute) for ``name`` under ``uri``; ``urn:...:User`` alone (which the
    grammar splits as attribute ``User`` of ``urn:...:2.0``) is not an attribute.

    A name without a URN is a core attribute first, else the one extension attribute of that name
    (RFC 7644 section 3.10): ``department eq "Sales"`` filters on the enterprise extension as Entra's
    mappings name it, and a core attribute of the same name would win."""
    found = schema.attribute(name, uri) if uri is not None else schema.unqualified(name)
    if found is None or found[1].returned == "never":
        return None
    return found


def _raw(container: Mapping[str, Any], ext: str | None, attr: Attr) -> Any:
    if ext is not None:
        holder = container.get(ext)
        return holder.get(attr.name) if isinstance(holder, Mapping) else None
    return container.get(attr.name)


def _getter(scope: _ResourceScope | _ElementScope, path: AttrPath, *, compare: bool) -> tuple[Getter, Attr]:
    """A function giving the flat list of values the path designates, and the attribute of those values."""
    ext, attr = scope.resolve(path)
    sub: Attr | None = None
    if path.sub_attr is not None:
        if not attr.is_complex:
            raise invalid_filter(f"{attr.name} has no sub-attributes")
        sub = attr.child(path.sub_attr)
        if sub is None or sub.returned == "never":
            raise invalid_filter(f"{attr.name} has no sub-attribute {path.sub_attr}")
    elif attr.is_complex and compare:
        sub = attr.child("value")
        if sub is None:
            raise invalid_filter(f"{attr.name} is complex: compare one of its sub-attributes")

    def get(item: Mapping[str, Any]) -> list[Any]:
        value = _raw(item, ext, attr)
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        if sub is None:
            return values
        return [v.get(sub.name) for v in values if isinstance(v, Mapping) and v.get(sub.name) is not None]

    return get, (sub or attr)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, list)):
        return len(value) > 0
    if isinstance(value, Mapping):
        return any(_present(v) for v in value.values())
    return True


# --- compilation ---------------------------------------------------------------------------------


def _compile(node: FilterNode, scope: _ResourceScope | _ElementScope) -> Predicate:
    if isinstance(node, LogicalExpr):
        terms = [_compile(t, scope) for t in node.terms]
        if node.op == LogicalOperator.and_:
            return lambda r: all(t(r) for t in terms)
        return lambda r: any(t(r) for t in terms)
    if isinstance(node, Not):
        inner = _compile(node.expr, scope)
        return lambda r: not inner(r)
    if isinstance(node, Present):
        get, _ = _getter(scope, node.attr_path, compare=False)
        return lambda r: any(_present(v) for v in get(r))
    if isinstance(node, Comparison):
        get, attr = _getter(scope, node.attr_path, compare=True)
        op = node.op.value
        if node.value is None:  # "eq null" is "unassigned", "ne null" is "present"
            if op not in ("eq", "ne"):
                raise invalid_filter(f"{node.attr_path}: only eq and ne compare with null")
            present = op == "ne"
            return lambda r: any(_present(v) for v in get(r)) is present
        if op == "ne":
            eq = comparator(attr, "eq", node.value, str(node.attr_path))
            return lambda r: not any(eq(v) for v in get(r))
        test = comparator(attr, op, node.value, str(node.attr_path))
        return lambda r: any(test(v) for v in get(r))
    if isinstance(node, ValuePath):
        if not isinstance(scope, _ResourceScope):
            raise invalid_filter("value filters cannot be nested")
        return value_path_predicate(scope.schema, node)
    raise invalid_filter(f"unsupported filter expression {node}")


def value_path_predicate(schema: ResourceSchema, node: ValuePath) -> Predicate:
    """``attr[filter]`` as a resource predicate: true when some value of ``attr`` matches."""
    ext, attr = _ResourceScope(schema).resolve(node.attr_path)
    match = element_filter(attr, node.val_filter)

    def predicate(resource: Mapping[str, Any]) -> bool:
        value = _raw(resource, ext, attr)
        values = value if isinstance(value, list) else [value] if value is not None else []
        return any(isinstance(v, Mapping) and match(v) for v in values)

    return predicate


def element_filter(attr: Attr, node: FilterNode) -> Predicate:
    """A predicate over one value of the complex attribute ``attr`` (``emails[type eq "work"]``)."""
    if not attr.is_complex:
        raise invalid_filter(f"{attr.name} is not complex: it cannot take a value filter")
    return _compile(node, _ElementScope(attr))


def _instant(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_trim_fraction(value))
        except ValueError:
            raise invalid_filter(f"{where}: {value!r} is not an xsd:dateTime") from None
    else:
        raise invalid_filter(f"{where}: {value!r} is not an xsd:dateTime")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _trim_fraction(value: str) -> str:
    """Python 3.11 accepts at most 6 fractional digits; .NET clients send 7 (``21.8617979-07:00``)."""
    if "." not in value:
        return value
    head, _, rest = value.partition(".")
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"


def _resource_instant(value: Any) -> datetime | None:
    try:
        return _instant(value, "")
    except ScimError:
        return None


_STRING_TYPES = {"string", "reference", "binary"}
_ORDERING = {"gt", "ge", "lt", "le"}
_SUBSTRING = {"co", "sw", "ew"}


def comparator(attr: Attr, op: str, expected: Any, where: str) -> Callable[[Any], bool]:
    """A test of one attribute value against ``op expected``, per the attribute's type."""
    kind = attr.type
    if kind == "complex":
        raise invalid_filter(f"{where} is complex: compare one of its sub-attributes")
    if kind == "boolean":
        if op not in ("eq", "ne"):
            raise invalid_filter(f"{where} is a boolean: only eq, ne and pr apply")
        if isinstance(expected, str) and expected.lower() in ("true", "false"):
            expected = expected.lower() == "true"
        if not isinstance(expected, bool):
            raise invalid_filter(f"{where} is a boolean, {expected!r} is not")
        return lambda v: v is expected or (isinstance(v, str) and v.lower() == str(expected).lower())
    if kind == "dateTime":
        if op in _SUBSTRING:
            raise invalid_filter(f"{where} is a dateTime: {op} does not apply")
        instant = _instant(expected, where)
        return _ordered(op, instant, _resource_instant)
    if kind in ("integer", "decimal"):
        if isinstance(expected, bool) or not isinstance(expected, (int, float)):
            raise invalid_filter(f"{where} is a number, {expected!r} is not")
        if op in _SUBSTRING:
            raise invalid_filter(f"{where} is a number: {op} does not apply")
        return _ordered(op, expected, lambda v: v if isinstance(v, (int, float)) else None)
    if kind in _STRING_TYPES:
        if not isinstance(expected, str):
            raise invalid_filter(f"{where} is a string, {expected!r} is not")
        if kind == "binary" and op in _ORDERING:
            raise invalid_filter(f"{where} is binary: {op} does not apply")
        norm: Callable[[Any], Any] = (
            (lambda v: v if isinstance(v, str) else None)
            if attr.case_exact
            else (lambda v: fold(v) if isinstance(v, str) else None)
        )
        want = norm(expected)
        if op == "co":
            return lambda v: (f := norm(v)) is not None and want in f
        if op == "sw":
            return lambda v: (f := norm(v)) is not None and f.startswith(want)
        if op == "ew":
            return lambda v: (f := norm(v)) is not None and f.endswith(want)
        return _ordered(op, want, norm)
    raise invalid_filter(f"{where}: attributes of type {kind} cannot be compared")


def _ordered(op: str, expected: Any, convert: Callable[[Any], Any]) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        actual = convert(value)
        if actual is None:
            return False
        if op in ("eq", "ne"):
            return bool(actual == expected)
        if op == "gt":
            return bool(actual > expected)
        if op == "ge":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        return bool(actual <= expected)

    return test


# --- sorting -------------------------------------------------------------------------------------


class _Descending:
    """Inverts the order of a value so one ascending sort gives descending values, missing ones last."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash(self.value)


def parse_attribute_path(text: str, *, error: Callable[[str], ScimError]) -> AttrPath:
    try:
        node = Path(text).ast
    except (SCIMException, ValueError) as exc:
        raise error(f"invalid attribute path {text!r}: {exc}") from None
    if not isinstance(node, AttrPath):
        raise error(f"{text!r} is not an attribute path")
    return node


def sort_key(
    attr_path: str, resource_type: str, *, descending: bool = False
) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A key for ``sorted()`` by ``attr_path`` (RFC 7644 section 3.4.2.3): values typed and case-folded
    per the schema, a multi-valued attribute sorts by its primary (else first) value, resources without
    a value come last, and ties are broken by ``id`` so pages are stable. For ``sortOrder=descending``
    pass ``descending=True`` (do not use ``reverse=True``: it would put missing values first)."""

    def bad(detail: str) -> ScimError:
        return ScimError(400, detail, "invalidValue")

    schema = resource_schema(resource_type)
    path = parse_attribute_path(attr_path, error=bad)
    found = resolve_attribute(schema, path.attr, path.uri)
    if found is None:
        raise bad(f"cannot sort by unknown attribute {attr_path!r}")
    ext, attr = found
    sub: Attr | None = None
    if path.sub_attr:
        sub = attr.child(path.sub_attr)
        if sub is None:
            raise bad(f"cannot sort by unknown attribute {attr_path!r}")
    elif attr.is_complex:
        sub = attr.child("value")
        if sub is None:
            raise bad(f"cannot sort by the complex attribute {attr_path!r}")
    leaf = sub or attr

    def typed(value: Any) -> Any:
        if leaf.type == "dateTime":
            return _resource_instant(value)
        if isinstance(value, str) and not leaf.case_exact:
            return fold(value)
        if isinstance(value, (str, int, float)):
            return value
        return None

    def key(resource: dict[str, Any]) -> tuple[Any, ...]:
        raw = _raw(resource, ext, attr)
        if isinstance(raw, list):
            items = [i for i in raw if i is not None]
            primary = [i for i in items if isinstance(i, Mapping) and i.get("primary") is True]
            raw = (primary or items or [None])[0]
        if sub is not None:
            raw = raw.get(sub.name) if isinstance(raw, Mapping) else None
        value = typed(raw)
        ident = str(resource.get("id", ""))
        if value is None:
            return (1, 0, ident)
        return (0, _Descending(value) if descending else value, ident)

    return key


# --- projection ----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _selection(items: tuple[str, ...], resource_type: str) -> dict[tuple[str | None, str], set[str] | None]:
    """Requested attributes as {(extension URN or None, attribute name): sub-attribute names or None (all)}.

    Parsed once per list, not once per resource of a page: the result is only read."""
    schema = resource_schema(resource_type)
    out: dict[tuple[str | None, str], set[str] | None] = {}
    for text in items:
        text = text.strip()
        if not text:
            continue
        ext_urn = schema.extension_urn(text)
        if ext_urn is not None:  # the whole extension
            for attr in dict(schema.extensions[ext_urn.lower()][1]).values():
                out[(ext_urn, attr.name)] = None
            continue
        try:
            node = Path(text).ast
        except (SCIMException, ValueError):
            continue
        sub_name: str | None = None
        if isinstance(node, ValuePath):  # attributes=emails[type eq "work"] (seen in the field)
            path, sub_name = node.attr_path, node.sub_attr
        elif isinstance(node, AttrPath):
            path, sub_name = node, node.sub_attr
        else:
            continue
        found = resolve_attribute(schema, path.attr, path.uri)
        if found is None:
            continue  # unknown attributes are ignored (RFC 7644 section 3.9 does not ask for an error)
        ext, attr = found
        key = (ext, attr.name)
        sub = attr.child(sub_name) if sub_name else None
        if sub_name and sub is None:
            continue
        if sub is None:
            out[key] = None
        elif key not in out or out[key] is not None:
            current = out.get(key)
            out[key] = (current or set()) | {sub.name}
    return out


def project(
    resource: dict[str, Any], attributes: list[str] | None, excluded: list[str] | None, resource_type: str
) -> dict[str, Any]:
    """The resource as returned under ``attributes``/``excludedAttributes`` (RFC 7644 section 3.9):
    ``returned: always`` attributes (id, schemas, meta) are always kept, ``never`` ones (password)
    never, ``request`` ones only when asked for. ``attributes`` wins when both are given."""
    schema = resource_schema(resource_type)
    wanted = _selection(tuple(attributes), resource_type) if attributes else None
    dropped = _selection(tuple(excluded), resource_type) if excluded and not attributes else {}

    def keep(ext: str | None, attr: Attr, value: Any) -> Any:
        if attr.returned == "never":
            return None
        if attr.returned == "always":
            return value
        key = (ext, attr.name)
        if wanted is not None:
            if key not in wanted:
                return None
            return _subset(value, wanted[key], keep=True)
        if attr.returned == "request":
            return None
        if key in dropped:
            return _subset(value, dropped[key], keep=False)
        return value

    out: dict[str, Any] = {}
    for name, value in resource.items():
        ext_urn = schema.extension_urn(name)
        if ext_urn is not None and isinstance(value, Mapping):
            kept = {}
            for sub_name, sub_value in value.items():
                found = schema.attribute(sub_name, ext_urn)
                if found is None:
                    continue
                projected = keep(ext_urn, found[1], sub_value)
                if projected is not None:
                    kept[sub_name] = projected
            if kept:
                out[name] = kept
            continue
        found = schema.attribute(name)
        if found is None:
            if wanted is None:
                out[name] = value
            continue
        projected = keep(None, found[1], value)
        if projected is not None:
            out[name] = projected
    if isinstance(out.get("schemas"), list):
        out["schemas"] = [s for s in out["schemas"] if schema.extension_urn(s) is None or s in out]
    return out


def _subset(value: Any, subs: set[str] | None, *, keep: bool) -> Any:
    """Keep (or drop) only the named sub-attributes of a complex value; None when nothing is left."""
    if subs is None:
        return value if keep else None

    def one(item: Any) -> Any:
        if not isinstance(item, Mapping):
            return item
        picked = {k: v for k, v in item.items() if (k in subs) == keep}
        return picked or None

    if isinstance(value, list):
        items = [p for p in (one(i) for i in value) if p is not None]
        return items or None
    return one(value)
