"""The SCIM schemas this service provider implements, and the discovery documents built from them.

One source of truth: the RFC 7643 definitions of User (section 4.1), EnterpriseUser (section 4.3) and
Group (section 4.2) as scim2-models describes them, corrected where this service behaves differently
(see ``_OVERRIDES``). ``/Schemas`` serves exactly these documents, and :class:`Attr` trees parsed back
from them drive validation (``convert``), PATCH (``patch``), filtering, sorting and projection
(``filters``), so what discovery says is what the endpoint does.

Every attribute of the served schemas, the common attributes (``id``, ``externalId``, ``meta.*``,
``schemas``) and their sub-attributes can be filtered on, except ``returned: never`` ones
(``password``). ``compile_filter`` raises ``invalidFilter`` for anything else, so the server needs no
list of its own; :func:`filterable_attributes` lists the accepted paths for documentation and tests.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    ResourceType,
    Schema,
    ServiceProviderConfig,
    User,
)

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SERVICE_PROVIDER_CONFIG_URN = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


@dataclass(frozen=True)
class Attr:
    """One attribute definition (RFC 7643 section 7), names matched case-insensitively."""

    name: str
    type: str
    multi_valued: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    required: bool = False
    canonical_values: tuple[str, ...] = ()
    sub: Mapping[str, Attr] = field(default_factory=dict)

    def child(self, name: str) -> Attr | None:
        return self.sub.get(name.lower())

    @property
    def is_complex(self) -> bool:
        return self.type == "complex"

    @property
    def read_only(self) -> bool:
        return self.mutability == "readOnly"


@dataclass(frozen=True)
class ResourceSchema:
    """A resource type: its core attributes (common ones included) and its schema extensions."""

    name: str
    endpoint: str
    core_urn: str
    core: Mapping[str, Attr]
    extensions: Mapping[str, tuple[str, Mapping[str, Attr]]]  # lower-cased URN -> (URN, attributes)

    def attribute(self, name: str, urn: str | None = None) -> tuple[str | None, Attr] | None:
        """Find an attribute by name (and optional schema URN): (extension URN or None for core, attr)."""
        if urn is None or urn.lower() == self.core_urn.lower():
            found = self.core.get(name.lower())
            return (None, found) if found else None
        ext = self.extensions.get(urn.lower())
        if ext is None:
            return None
        found = ext[1].get(name.lower())
        return (ext[0], found) if found else None

    def unqualified(self, name: str) -> tuple[str | None, Attr] | None:
        """An attribute named without its schema URN: the core one, else the one extension attribute
        of that name (Entra's mappings can send ``department`` for the enterprise extension's)."""
        found = self.attribute(name)
        if found is not None:
            return found
        matches = [(urn, attrs[name.lower()]) for urn, attrs in self.extensions.values() if name.lower() in attrs]
        return matches[0] if len(matches) == 1 else None

    def extension_urn(self, name: str) -> str | None:
        """The canonical spelling of an extension URN, or None when ``name`` is not one."""
        ext = self.extensions.get(name.lower())
        return ext[0] if ext else None


# Where this service differs from scim2-models' RFC 7643 description, and why.
# Keyed by (schema URN, attribute, sub-attribute or None).
_OVERRIDES: dict[tuple[str, str, str | None], dict[str, Any]] = {
    # Enterprise manager: Entra sends {"$ref": null, "value": id}; neither sub-attribute is required
    # by RFC 7643 section 4.3 ("RECOMMENDED"). $ref is not stored (the manager's id is enough), so it
    # is not advertised either. displayName is kept as sent by the identity provider.
    (ENTERPRISE_URN, "manager", "value"): {"required": False},
    (ENTERPRISE_URN, "manager", "displayName"): {"mutability": "readWrite"},
    # Group names are unique per namespace: the endpoint enforces it with name claims.
    (GROUP_URN, "displayName", None): {"uniqueness": "server"},
    # Members are stored as id and type; a display or $ref in a response comes from the server, and
    # one in a request is not kept.
    (GROUP_URN, "members", "display"): {"mutability": "readOnly"},
    (GROUP_URN, "members", "$ref"): {"mutability": "readOnly"},
}
_REMOVED: set[tuple[str, str, str]] = {(ENTERPRISE_URN, "manager", "$ref")}

_DESCRIPTIONS = {
    USER_URN: ("User", "User Account"),
    GROUP_URN: ("Group", "Group"),
    ENTERPRISE_URN: ("EnterpriseUser", "Enterprise User"),
}


def _schema_documents() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for model in (User, EnterpriseUser, Group):
        doc = model.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        urn = doc["id"]
        doc["name"], doc["description"] = _DESCRIPTIONS[urn]
        for attr in doc["attributes"]:
            for key, value in _OVERRIDES.get((urn, attr["name"], None), {}).items():
                attr[key] = value
            subs = attr.get("subAttributes")
            if subs:
                attr["subAttributes"] = [s for s in subs if (urn, attr["name"], s["name"]) not in _REMOVED]
                for sub in attr["subAttributes"]:
                    sub.update(_OVERRIDES.get((urn, attr["name"], sub["name"]), {}))
        Schema.model_validate(doc)  # the corrected document must still be a valid Schema resource
        docs[urn] = doc
    return docs


_DOCUMENTS = _schema_documents()


def _attr_from_doc(doc: Mapping[str, Any]) -> Attr:
    subs = {s["name"].lower(): _attr_from_doc(s) for s in doc.get("subAttributes") or []}
    return Attr(
        name=doc["name"],
        type=doc["type"],
        multi_valued=bool(doc.get("multiValued")),
        case_exact=bool(doc.get("caseExact")),
        mutability=doc.get("mutability", "readWrite"),
        returned=doc.get("returned", "default"),
        uniqueness=doc.get("uniqueness", "none"),
        required=bool(doc.get("required")),
        canonical_values=tuple(doc.get("canonicalValues") or ()),
        sub=subs,
    )


def _string(name: str, **kw: Any) -> Attr:
    return Attr(name=name, type="string", **kw)


def _common() -> dict[str, Attr]:
    """RFC 7643 section 3.1: attributes every resource has, outside the schema documents."""
    meta_subs = {
        "resourcetype": _string("resourceType", case_exact=True, mutability="readOnly"),
        "created": Attr(name="created", type="dateTime", mutability="readOnly"),
        "lastmodified": Attr(name="lastModified", type="dateTime", mutability="readOnly"),
        "location": Attr(name="location", type="reference", case_exact=True, mutability="readOnly"),
        "version": _string("version", case_exact=True, mutability="readOnly"),
    }
    return {
        "id": _string("id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server"),
        "externalid": _string("externalId", case_exact=True),
        "meta": Attr(name="meta", type="complex", mutability="readOnly", returned="always", sub=meta_subs),
        "schemas": Attr(
            name="schemas", type="reference", multi_valued=True, mutability="readOnly", returned="always"
        ),
    }


def _attrs(urn: str) -> dict[str, Attr]:
    return {a["name"].lower(): _attr_from_doc(a) for a in _DOCUMENTS[urn]["attributes"]}


_RESOURCES: dict[str, ResourceSchema] = {
    "User": ResourceSchema(
        name="User",
        endpoint="/Users",
        core_urn=USER_URN,
        core={**_common(), **_attrs(USER_URN)},
        extensions={ENTERPRISE_URN.lower(): (ENTERPRISE_URN, _attrs(ENTERPRISE_URN))},
    ),
    "Group": ResourceSchema(
        name="Group",
        endpoint="/Groups",
        core_urn=GROUP_URN,
        core={**_common(), **_attrs(GROUP_URN)},
        extensions={},
    ),
}


def resource_schema(resource_type: str) -> ResourceSchema:
    """The schema of "User" or "Group"; ValueError for anything else (a programming error)."""
    try:
        return _RESOURCES[resource_type]
    except KeyError:
        raise ValueError(f"unknown resource type {resource_type!r}") from None


def _iter_paths(prefix: str, attrs: Mapping[str, Attr]) -> Iterator[str]:
    for attr in attrs.values():
        if attr.returned == "never":
            continue
        yield f"{prefix}{attr.name}"
        for sub in attr.sub.values():
            if sub.returned != "never":
                yield f"{prefix}{attr.name}.{sub.name}"


@cache
def filterable_attributes(resource_type: str) -> frozenset[str]:
    """Attribute paths a filter may name (core ones unqualified, extension ones URN-qualified)."""
    schema = resource_schema(resource_type)
    paths = set(_iter_paths("", schema.core))
    for urn, attrs in schema.extensions.values():
        paths.update(_iter_paths(f"{urn}:", attrs))
    return frozenset(paths)


def _location(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}{path}"


def schemas(base_url: str) -> list[dict[str, Any]]:
    """The ``/Schemas`` resources (RFC 7644 section 4), each with its meta.location."""
    out = []
    for urn, doc in _DOCUMENTS.items():
        item = copy.deepcopy(doc)
        item["meta"] = {"resourceType": "Schema", "location": _location(base_url, f"/Schemas/{urn}")}
        out.append(item)
    return out


def resource_types(base_url: str) -> list[dict[str, Any]]:
    """The ``/ResourceTypes`` resources: User (with the optional enterprise extension) and Group."""
    out = []
    for model in (User[EnterpriseUser], Group):
        doc = ResourceType.from_resource(model).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        name = doc["name"]
        doc["description"] = _DESCRIPTIONS[doc["schema"]][1]
        doc["meta"] = {"resourceType": "ResourceType", "location": _location(base_url, f"/ResourceTypes/{name}")}
        out.append(doc)
    return out


def service_provider_config(base_url: str, max_results: int) -> dict[str, Any]:
    """The ``/ServiceProviderConfig`` resource, telling the truth about what is supported."""
    doc = {
        "schemas": [SERVICE_PROVIDER_CONFIG_URN],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication with a bearer token from the endpoint's token Secret",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": _location(base_url, "/ServiceProviderConfig"),
        },
    }
    ServiceProviderConfig.model_validate(doc)
    return doc
