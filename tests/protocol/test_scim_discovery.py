"""Discovery documents (/ServiceProviderConfig, /Schemas, /ResourceTypes) are valid SCIM resources and
describe what the endpoint does."""

from __future__ import annotations

from typing import Any

import pytest
from scim2_models import Context, Resource, ResourceType, Schema, ServiceProviderConfig

from scim_endpoint import schema as s

BASE = "https://scim.example.test/scim/v2"


def _attr(doc: dict[str, Any], name: str, sub: str | None = None) -> dict[str, Any]:
    attr = next(a for a in doc["attributes"] if a["name"] == name)
    if sub is None:
        return attr
    return next(a for a in attr["subAttributes"] if a["name"] == sub)


def _schema(urn: str) -> dict[str, Any]:
    return next(d for d in s.schemas(BASE) if d["id"] == urn)


def test_service_provider_config_tells_what_is_supported() -> None:
    doc = s.service_provider_config(BASE, 250)
    parsed = ServiceProviderConfig.model_validate(doc, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    assert parsed.patch and parsed.patch.supported is True
    assert parsed.filter and parsed.filter.supported is True and parsed.filter.max_results == 250
    assert parsed.sort and parsed.sort.supported is True
    assert parsed.etag and parsed.etag.supported is True
    assert parsed.bulk and parsed.bulk.supported is False
    assert parsed.change_password and parsed.change_password.supported is False
    assert [a["type"] for a in doc["authenticationSchemes"]] == ["oauthbearertoken"]
    assert doc["meta"]["location"] == f"{BASE}/ServiceProviderConfig"


def test_schemas_are_valid_schema_resources_with_locations() -> None:
    docs = s.schemas(BASE + "/")
    assert [d["id"] for d in docs] == [s.USER_URN, s.ENTERPRISE_URN, s.GROUP_URN]
    for doc in docs:
        Schema.model_validate(doc, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        assert doc["meta"] == {"resourceType": "Schema", "location": f"{BASE}/Schemas/{doc['id']}"}
    assert _schema(s.USER_URN)["description"] == "User Account"  # what Microsoft's suite looks for


def test_schemas_can_be_turned_into_client_models() -> None:
    """Conformance tools build their models from /Schemas: that must work."""
    for doc in s.schemas(BASE):
        model = Resource.from_schema(Schema.model_validate(doc))
        assert model.__name__


def test_user_schema_attribute_characteristics() -> None:
    user = _schema(s.USER_URN)
    assert _attr(user, "userName")["required"] is True
    assert _attr(user, "userName")["caseExact"] is False
    assert _attr(user, "userName")["uniqueness"] == "server"
    assert _attr(user, "password")["mutability"] == "writeOnly"
    assert _attr(user, "password")["returned"] == "never"
    assert _attr(user, "groups")["mutability"] == "readOnly"
    names = {a["name"] for a in user["attributes"]}
    for expected in ("name", "emails", "phoneNumbers", "ims", "photos", "addresses", "entitlements", "roles",
                     "x509Certificates", "active", "displayName", "title", "locale", "timezone"):
        assert expected in names


def test_enterprise_manager_describes_what_is_stored() -> None:
    ent = _schema(s.ENTERPRISE_URN)
    manager = _attr(ent, "manager")
    assert {a["name"] for a in manager["subAttributes"]} == {"value", "displayName"}
    assert _attr(ent, "manager", "value")["required"] is False  # Entra sends {"$ref": null, "value": id}
    assert {a["name"] for a in ent["attributes"]} == {
        "employeeNumber", "costCenter", "organization", "division", "department", "manager",
    }


def test_group_schema_members_and_unique_display_name() -> None:
    group = _schema(s.GROUP_URN)
    assert _attr(group, "displayName")["uniqueness"] == "server"
    assert _attr(group, "displayName")["required"] is True
    assert {a["name"] for a in _attr(group, "members")["subAttributes"]} == {"value", "$ref", "type", "display"}
    assert _attr(group, "members", "type")["canonicalValues"] == ["User", "Group"]
    assert _attr(group, "members", "display")["mutability"] == "readOnly"


def test_resource_types() -> None:
    docs = s.resource_types(BASE)
    for doc in docs:
        ResourceType.model_validate(doc, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    user, group = docs
    assert (user["id"], user["endpoint"], user["schema"]) == ("User", "/Users", s.USER_URN)
    assert user["schemaExtensions"] == [{"schema": s.ENTERPRISE_URN, "required": False}]
    assert (group["id"], group["endpoint"], group["schema"]) == ("Group", "/Groups", s.GROUP_URN)
    assert user["meta"]["location"] == f"{BASE}/ResourceTypes/User"


def test_runtime_attributes_come_from_the_served_documents() -> None:
    """The attribute table used by filters/PATCH is the /Schemas documents plus the common attributes."""
    user = s.resource_schema("User")
    served = {a["name"] for a in _schema(s.USER_URN)["attributes"]}
    assert {a.name for a in user.core.values()} == served | {"id", "externalId", "meta", "schemas"}
    assert user.core["id"].case_exact and user.core["externalid"].case_exact
    assert not user.core["emails"].child("value").case_exact  # type: ignore[union-attr]


def test_filterable_attributes() -> None:
    users = s.filterable_attributes("User")
    assert {"userName", "emails.value", "meta.lastModified", "externalId", "id"} <= users
    assert f"{s.ENTERPRISE_URN}:manager.value" in users
    assert "password" not in users
    assert {"displayName", "members.value"} <= s.filterable_attributes("Group")


def test_unknown_resource_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        s.resource_schema("Device")
