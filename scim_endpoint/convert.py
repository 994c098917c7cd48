"""Incoming SCIM bodies → canonical SCIM dicts → custom-resource specs, and back.

The *canonical* form of a resource is its SCIM JSON representation with every attribute name spelled as
in the schema (``userName``, ``name.givenName``), values of the schema's type (``"True"`` becomes
``True``), nulls and empty values dropped, the enterprise extension under its URN key, and ``schemas``
listing the core URN plus the extension URN when the extension has a value. Canonical dicts made from a
request hold no ``id``, ``meta``, ``groups`` or ``password``; :func:`user_to_scim`/:func:`group_to_scim`
add the read-only ones back. A group's ``members`` are ``{"value": id, "type": "User"|"Group"}``, one per
id (see :func:`members`). Filters, PATCH and projection all work on canonical dicts.

Request rules (RFC 7643 section 2.2, RFC 7644 sections 3.3 and 3.5.1):
- attribute names are matched case-insensitively (``"Primary"``, ``"Department"`` are sent in the field);
- ``null`` means unassigned and is ignored;
- read-only attributes (``id``, ``meta``, ``schemas``, ``groups``, ``members.display``...) are ignored,
  except an ``id`` that differs from the resource's own on PUT (400 ``mutability``);
- ``password`` is accepted and dropped: this service stores no credentials;
- attributes no schema defines are ignored (RFC 7644 does not require rejecting them, and identity
  providers send custom mappings); a wrong type is 400 ``invalidValue``, a non-object body 400
  ``invalidSyntax``, a missing required attribute 400 ``invalidValue``;
- booleans may be the strings ``"true"``/``"false"`` in any case (Entra, OneLogin);
- a complex attribute that has a ``value`` sub-attribute accepts a bare string for it, and any
  single-valued attribute accepts a one-element list (Entra sends the manager as ``[{"value": id}]``),
  a simple one also ``{"value": x}`` (the element shape of a multi-valued attribute, as Entra sends it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scim_endpoint.errors import ScimError
from scim_endpoint.schema import (
    ENTERPRISE_URN,
    GROUP_URN,
    USER_URN,
    Attr,
    ResourceSchema,
    resource_schema,
)

_TRUE = {"true": True, "false": False}

# Attributes the endpoint reads or computes itself; ignored when a client sends them.
_SERVER_ATTRIBUTES = {"id", "meta", "schemas"}

# Length limits of the CRDs (crds/scimusers.yaml, crds/scimgroups.yaml); tests/protocol checks they
# match, so a too-long value is a SCIM 400 here rather than a validation failure in the API server.
DEFAULT_MAX_LENGTH = 1024
MAX_LENGTH: dict[str, int] = {
    "profileUrl": 2048,
    "userType": 256,
    "preferredLanguage": 64,
    "locale": 64,
    "timezone": 128,
    "name.honorificPrefix": 256,
    "name.honorificSuffix": 256,
    "*.value": 4096,
    "*.type": 256,
    "addresses.formatted": 2048,
    "addresses.postalCode": 256,
    "addresses.country": 256,
    "enterprise.employeeNumber": 256,
    "enterprise.costCenter": 256,
}
MAX_ITEMS = 100
_MEMBER_TYPES = {"user": "User", "group": "Group"}


def invalid(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def coerce_boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return _TRUE[value.strip().lower()]
    raise invalid(f"{where} must be a boolean, got {value!r}")


def normalize(attr: Attr, value: Any, where: str, *, unwrap: bool = True) -> Any:
    """The canonical value of ``attr``, or None when ``value`` is unassigned (null, empty list/object).

    Read-only sub-attributes are dropped (clients echo them back); ``where`` names the attribute in
    error messages. ``unwrap``: a single value may come as a one-element list or ``{"value": x}``
    (an attribute of the resource, as Entra sends it; not a sub-attribute inside a complex value)."""
    if value is None:
        return None
    if attr.name == "members" and attr.is_complex:
        return members(value, where) or None
    if attr.multi_valued:
        items = value if isinstance(value, list) else [value]
        out: list[Any] = []
        seen: set[Any] = set()
        for i, item in enumerate(items):
            norm = _normalize_single(attr, item, f"{where}[{i}]")
            key = freeze(norm)
            if norm is not None and key not in seen:  # a set: groups reach 50,000 members
                seen.add(key)
                out.append(norm)
        if not out:
            return None
        if attr.is_complex and sum(1 for v in out if isinstance(v, dict) and v.get("primary")) > 1:
            raise invalid(f"{where}: at most one value may be primary (RFC 7643 section 2.4)")
        return out
    if isinstance(value, list) and (unwrap or attr.is_complex):
        # Entra sends a single value as a one-element array: the manager as [{"$ref": null, "value":
        # id}], other attributes as ["x"] or [{"value": "x"}].
        if len(value) != 1:
            raise invalid(f"{where} is single-valued, got a list of {len(value)}")
        value = value[0]
    if unwrap and not attr.is_complex and isinstance(value, dict) and "value" in value and set(value) <= _WRAPPER_KEYS:
        value = value["value"]  # {"value": "x"} for a simple attribute, the shape of a multi-valued one
    return _normalize_single(attr, value, where)


# The keys of a multi-valued attribute's element that a simple value may arrive wrapped in.
_WRAPPER_KEYS = frozenset({"value", "$ref", "display", "primary", "type"})


def freeze(value: Any) -> Any:
    """A hashable stand-in for a canonical value (dicts of scalars, lists of them)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def _normalize_single(attr: Attr, value: Any, where: str) -> Any:
    if value is None:
        return None
    if attr.is_complex:
        if not isinstance(value, dict):
            if isinstance(value, str) and attr.child("value") is not None:
                value = {"value": value}
            else:
                raise invalid(f"{where} must be an object, got {_kind(value)}")
        out: dict[str, Any] = {}
        for key, sub_value in value.items():
            sub = attr.child(key) if isinstance(key, str) else None
            if sub is None or sub.read_only:
                continue
            norm = normalize(sub, sub_value, f"{where}.{sub.name}", unwrap=False)
            if norm is not None:
                out[sub.name] = norm
        return out or None
    return scalar(attr, value, where)


def scalar(attr: Attr, value: Any, where: str) -> Any:
    """A simple (non-complex) value converted to the attribute's type; 400 invalidValue otherwise."""
    if attr.type == "boolean":
        return coerce_boolean(value, where)
    if attr.type in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"{where} must be a number, got {value!r}")
        return value
    if not isinstance(value, str):
        raise invalid(f"{where} must be a string, got {_kind(value)}")
    if attr.type == "dateTime":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise invalid(f"{where} must be an xsd:dateTime, got {value!r}") from None
    if attr.canonical_values == ("User", "Group"):  # members[...].type through a PATCH path
        canonical = _MEMBER_TYPES.get(value.lower())
        if canonical is None:
            raise invalid(f'{where} must be "User" or "Group", got {value!r}')
        return canonical
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _split_qualified(schema: ResourceSchema, key: str) -> tuple[str | None, str] | None:
    """``urn:...:User:userName`` → (URN, "userName") when the URN is one of the resource's schemas."""
    if not key.lower().startswith("urn:") or ":" not in key:
        return None
    urn, _, name = key.rpartition(":")
    if urn.lower() == schema.core_urn.lower():
        return None, name
    ext = schema.extension_urn(urn)
    return (ext, name) if ext else None


def _check_schemas(body: Mapping[str, Any], schema: ResourceSchema) -> None:
    declared = body.get("schemas")
    if declared is None:
        return
    if not isinstance(declared, list) or not all(isinstance(s, str) for s in declared):
        raise ScimError(400, "schemas must be a list of URIs", "invalidSyntax")
    if schema.core_urn.lower() not in {s.lower() for s in declared}:
        raise ScimError(400, f"schemas must contain {schema.core_urn}", "invalidSyntax")


def resource_from_body(
    body: Any, resource_type: str, *, current: Mapping[str, Any] | None = None, partial: bool = False
) -> dict[str, Any]:
    """The canonical attributes of a request body (shared by POST/PUT and PATCH's path-less values).

    ``partial`` (PATCH values) skips the ``schemas`` and required-attribute checks."""
    schema = resource_schema(resource_type)
    if not isinstance(body, dict):
        raise ScimError(400, f"a {resource_type} must be a JSON object", "invalidSyntax")
    if not partial:
        _check_schemas(body, schema)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if not isinstance(key, str) or value is None:
            continue
        lower = key.lower()
        if lower == "id":
            if current is not None and current.get("id") is not None and value != current.get("id"):
                raise ScimError(400, "id is read-only and cannot be changed", "mutability")
            continue
        if lower in _SERVER_ATTRIBUTES:
            continue
        ext_urn = schema.extension_urn(key)
        if ext_urn is not None:
            if not isinstance(value, dict):
                raise invalid(f"{ext_urn} must be an object, got {_kind(value)}")
            ext = _extension_from_body(schema, ext_urn, value)
            if ext:
                out.setdefault(ext_urn, {}).update(ext)
            continue
        qualified = _split_qualified(schema, key)
        urn, name = qualified if qualified else (None, key)
        found = schema.attribute(name, urn)
        if found is None:
            continue  # unknown attribute: ignored, see the module docstring
        ext_key, attr = found
        if attr.read_only or attr.mutability == "writeOnly":
            continue  # groups, meta...: read-only; password: never stored
        norm = normalize(attr, value, attr.name)
        if norm is None:
            continue
        if ext_key:
            out.setdefault(ext_key, {})[attr.name] = norm
        else:
            out[attr.name] = norm
    return out


def _extension_from_body(schema: ResourceSchema, urn: str, body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        found = schema.attribute(key, urn) if isinstance(key, str) else None
        if found is None or found[1].read_only or value is None:
            continue
        attr = found[1]
        norm = normalize(attr, value, f"{urn}:{attr.name}")
        if norm is not None:
            out[attr.name] = norm
    return out


def finish(
    resource: dict[str, Any], resource_type: str, *, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check required attributes, immutability, CRD limits, and set ``schemas`` and defaults."""
    schema = resource_schema(resource_type)
    for attr in schema.core.values():
        if attr.required and not resource.get(attr.name):
            raise invalid(f"{attr.name} is required")
    if current is not None:
        for attr in schema.core.values():
            immutable = attr.mutability == "immutable" and current.get(attr.name) is not None
            if immutable and resource.get(attr.name) != current.get(attr.name):
                raise ScimError(400, f"{attr.name} is immutable", "mutability")
    if resource_type == "User" and "active" not in resource:
        # Omitted on PUT: keep the current state (re-enabling a disabled user needs an explicit true).
        resource["active"] = bool(current.get("active", True)) if current is not None else True
    urns = [schema.core_urn]
    for urn, _ in schema.extensions.values():
        if resource.get(urn):
            urns.append(urn)
        else:
            resource.pop(urn, None)
    _check_limits(resource, resource_type)
    return {"schemas": urns, **{k: v for k, v in resource.items() if k != "schemas"}}


def _max_length(path: str) -> int:
    if path in MAX_LENGTH:
        return MAX_LENGTH[path]
    leaf = path.rsplit(".", 1)[-1]
    if "." in path and not path.startswith("enterprise.") and f"*.{leaf}" in MAX_LENGTH:
        return MAX_LENGTH[f"*.{leaf}"]
    return DEFAULT_MAX_LENGTH


def _check_limits(resource: Mapping[str, Any], resource_type: str) -> None:
    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            if len(value) > _max_length(path):
                raise invalid(f"{path} is longer than {_max_length(path)} characters")
        elif isinstance(value, list):
            if len(value) > MAX_ITEMS and path != "members":
                raise invalid(f"{path} has more than {MAX_ITEMS} values")
            for item in value:
                walk(item, path)
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, f"{path}.{key}")

    for key, value in resource.items():
        if key in ("schemas", "members", "id", "meta", "groups"):
            continue
        walk(value, "enterprise" if key == ENTERPRISE_URN else key)


def from_request(body: Any, resource_type: str, *, current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate and normalise a POST (``current`` None) or PUT (``current`` = the stored resource, as
    canonical or full SCIM dict) body into a canonical resource. Raises ScimError 400.

    A group's ``members`` (when any) are ``{"value": id, "type": "User"|"Group"}``, one per id (``type``
    omitted when the client sent none and no ``$ref`` tells; the server then resolves it from the id)."""
    return finish(resource_from_body(body, resource_type, current=current), resource_type, current=current)


def members(items: Any, where: str = "members") -> list[dict[str, Any]]:
    """Canonical group members: ``{"value", "type"}`` per distinct id, first one wins. A bare string is an
    id (Microsoft's suite sends them); a ``$ref`` to ``.../Groups/<id>`` makes an untyped member a Group.

    Hand-written rather than the generic path because groups reach 50,000 members and every PATCH
    revalidates all of them."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items if isinstance(items, list) else [items]):
        if item is None:
            continue
        if isinstance(item, str):
            item = {"value": item}
        elif not isinstance(item, dict):
            raise invalid(f"{where}[{i}] must be an object, got {_kind(item)}")
        value = kind = ref = None
        for key, field_value in item.items():
            lower = key.lower() if isinstance(key, str) else key
            if lower == "value":
                value = field_value
            elif lower == "type":
                kind = field_value
            elif lower == "$ref":
                ref = field_value
        if not value:
            raise invalid(f"{where}[{i}].value is required: a member is identified by its id")
        if not isinstance(value, str):
            raise invalid(f"{where}[{i}].value must be a string, got {_kind(value)}")
        member = {"value": value}
        if kind is not None:
            canonical = _MEMBER_TYPES.get(kind.lower()) if isinstance(kind, str) else None
            if canonical is None:
                raise invalid(f'{where}[{i}].type must be "User" or "Group", got {kind!r}')
            member["type"] = canonical
        elif isinstance(ref, str):
            lowered = ref.lower()
            if "/groups/" in lowered:
                member["type"] = "Group"
            elif "/users/" in lowered:
                member["type"] = "User"
        if value not in seen:
            seen.add(value)
            out.append(member)
    return out


# --- canonical ↔ custom-resource spec ------------------------------------------------------------

_USER_SCALARS = (
    "userName", "externalId", "active", "displayName", "nickName", "profileUrl", "title", "userType",
    "preferredLanguage", "locale", "timezone",
)
_USER_LISTS = ("emails", "phoneNumbers", "ims", "photos", "entitlements", "roles", "x509Certificates", "addresses")
_MULTI_VALUED_KEYS = ("value", "display", "type", "primary")
_ADDRESS_KEYS = ("formatted", "streetAddress", "locality", "region", "postalCode", "country", "type", "primary")
_NAME_KEYS = ("formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix")
_ENTERPRISE_KEYS = ("employeeNumber", "costCenter", "organization", "division", "department")


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: source[k] for k in keys if source.get(k) is not None}


def user_to_spec(user: Mapping[str, Any]) -> dict[str, Any]:
    """The ScimUser ``spec`` (crds/scimusers.yaml) of a canonical user."""
    spec = _pick(user, _USER_SCALARS)
    spec.setdefault("active", True)
    if user.get("name"):
        name = _pick(user["name"], _NAME_KEYS)
        if name:
            spec["name"] = name
    for key in _USER_LISTS:
        keys = _ADDRESS_KEYS if key == "addresses" else _MULTI_VALUED_KEYS
        items = [item for item in (_pick(i, keys) for i in user.get(key) or []) if item]
        if items:
            spec[key] = items
    ext = user.get(ENTERPRISE_URN) or {}
    enterprise = _pick(ext, _ENTERPRISE_KEYS)
    manager = _pick(ext.get("manager") or {}, ("value", "displayName"))
    if manager:
        enterprise["manager"] = manager
    if enterprise:
        spec["enterprise"] = enterprise
    return spec


def group_to_spec(group: Mapping[str, Any]) -> dict[str, Any]:
    """The ScimGroup ``spec`` (crds/scimgroups.yaml) of a canonical group; members are stored apart."""
    return _pick(group, ("displayName", "externalId"))


def user_to_scim(
    spec: Mapping[str, Any], id: str, meta: dict[str, Any], groups: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The full SCIM User of a stored spec: ``meta`` is used as given (the server computes it),
    ``groups`` entries keep their value/$ref/display/type."""
    out: dict[str, Any] = {"schemas": [USER_URN], "id": id}
    out.update(_pick(spec, _USER_SCALARS))
    out.setdefault("active", True)
    if spec.get("name"):
        out["name"] = dict(spec["name"])
    for key in _USER_LISTS:
        if spec.get(key):
            out[key] = [dict(item) for item in spec[key]]
    enterprise = spec.get("enterprise")
    if enterprise:
        ext = _pick(enterprise, _ENTERPRISE_KEYS)
        if enterprise.get("manager"):
            ext["manager"] = dict(enterprise["manager"])
        if ext:
            out["schemas"].append(ENTERPRISE_URN)
            out[ENTERPRISE_URN] = ext
    if groups:
        out["groups"] = [_pick(g, ("value", "$ref", "display", "type")) for g in groups]
    out["meta"] = meta
    return out


def group_to_scim(
    spec: Mapping[str, Any], id: str, meta: dict[str, Any], members: list[dict[str, Any]]
) -> dict[str, Any]:
    """The full SCIM Group of a stored spec and its members, each with the ``value``, ``type``, ``display``
    and ``$ref`` it was given (nothing derived: a client reads back the members as it wrote them)."""
    out: dict[str, Any] = {"schemas": [GROUP_URN], "id": id}
    out.update(_pick(spec, ("displayName", "externalId")))
    if members:
        out["members"] = [_pick(m, ("value", "$ref", "display", "type")) for m in members]
    out["meta"] = meta
    return out
