"""POST/PUT bodies → canonical resources → custom-resource specs → SCIM representations."""

from __future__ import annotations

from typing import Any

import pytest
from typed_requests import group_from_request, user_from_request

from litellm_scim import chart
from scim_contract import ScimGroupSpec, ScimUserSpec
from scim_endpoint import convert
from scim_endpoint.convert import (
    group_to_scim,
    group_to_spec,
    user_to_scim,
    user_to_spec,
)
from scim_endpoint.errors import ScimError
from scim_endpoint.schema import ENTERPRISE_URN, GROUP_URN, USER_URN

META = {"resourceType": "User", "location": "https://h/scim/v2/Users/u1", "version": 'W/"1"'}


def _error(fn: Any, *args: Any, **kwargs: Any) -> ScimError:
    with pytest.raises(ScimError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    return info.value


def test_okta_post_with_password_and_empty_groups() -> None:
    body = {
        "schemas": [USER_URN],
        "userName": "isabelle@example.com",
        "name": {"givenName": "Isabelle", "familyName": "Dupont"},
        "emails": [{"primary": True, "value": "isabelle@example.com", "type": "work"}],
        "displayName": "Isabelle Dupont",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    user = user_from_request(body)
    assert "password" not in user and "groups" not in user
    spec = user_to_spec(user)
    ScimUserSpec.model_validate(spec)
    assert spec == {
        "userName": "isabelle@example.com",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "active": True,
        "displayName": "Isabelle Dupont",
        "locale": "en-US",
        "name": {"givenName": "Isabelle", "familyName": "Dupont"},
        "emails": [{"value": "isabelle@example.com", "type": "work", "primary": True}],
    }
    assert "1mz050nq" not in repr(user_to_scim(spec, "u1", META))


def test_entra_post_with_meta_nulls_and_enterprise_extension() -> None:
    body = {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee@contoso.com",
        "active": True,
        "displayName": None,
        "emails": [{"primary": True, "type": "work", "value": "Test_User_fd0ea19b@contoso.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE_URN: {"department": "Sales", "manager": None, "employeeNumber": None},
    }
    user = user_from_request(body)
    assert "displayName" not in user and "roles" not in user and "meta" not in user
    assert user[ENTERPRISE_URN] == {"department": "Sales"}
    assert user["schemas"] == [USER_URN, ENTERPRISE_URN]
    assert user_to_spec(user)["enterprise"] == {"department": "Sales"}


def test_onelogin_template_values_are_strings() -> None:
    user = user_from_request({"schemas": [USER_URN], "userName": "a@b.c", "active": "true",
                              "emails": [{"value": "a@b.c", "primary": "True"}]})
    assert user["active"] is True
    assert user["emails"][0]["primary"] is True
    assert user_from_request({"userName": "a", "active": "FALSE"})["active"] is False


def test_attribute_names_are_case_insensitive() -> None:
    """Microsoft's reference suite posts "Primary", "Department" and "Manager": {"Value": ...}."""
    user = user_from_request({
        "UserName": "UserName222",
        "schemas": [ENTERPRISE_URN, USER_URN],
        "Emails": [{"Primary": True, "type": "work", "value": "testing@bob2.com"}],
        ENTERPRISE_URN: {"Department": "bob", "Manager": {"Value": "SuzzyQ"}},
    })
    assert user["userName"] == "UserName222"
    assert user["emails"] == [{"primary": True, "type": "work", "value": "testing@bob2.com"}]
    assert user_to_spec(user)["enterprise"] == {"department": "bob", "manager": {"value": "SuzzyQ"}}


def test_urn_qualified_core_attribute_in_body() -> None:
    user = user_from_request({f"{USER_URN}:userName": "q", f"{ENTERPRISE_URN}:department": "D"})
    assert user["userName"] == "q"
    assert user[ENTERPRISE_URN] == {"department": "D"}


def test_unknown_attributes_are_ignored() -> None:
    user = user_from_request({"userName": "OMalley", "adreses": [{"country": "Germany"}], "x-custom": 1})
    assert set(user) == {"schemas", "userName", "active"}


def test_manager_as_entra_array_or_bare_id() -> None:
    user = user_from_request({"userName": "a", ENTERPRISE_URN: {"manager": [{"$ref": None, "value": "m1"}]}})
    assert user[ENTERPRISE_URN]["manager"] == {"value": "m1"}
    user = user_from_request({"userName": "a", ENTERPRISE_URN: {"manager": "m2"}})
    assert user[ENTERPRISE_URN]["manager"] == {"value": "m2"}


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ({"schemas": [USER_URN]}, "invalidValue"),  # no userName
        ({"userName": ""}, "invalidValue"),
        ({"userName": 42}, "invalidValue"),
        ({"userName": "a", "active": "yes"}, "invalidValue"),
        ({"userName": "a", "active": 1}, "invalidValue"),
        ({"userName": "a", "name": "Bob"}, "invalidValue"),
        ({"userName": "a", "emails": [{"value": ["x"]}]}, "invalidValue"),
        ({"userName": "a", "emails": [{"value": "x", "primary": True}, {"value": "y", "primary": True}]},
         "invalidValue"),
        ({"userName": "a", ENTERPRISE_URN: "Sales"}, "invalidValue"),
        ({"userName": "a", "schemas": [GROUP_URN]}, "invalidSyntax"),
        ({"userName": "a", "schemas": "urn"}, "invalidSyntax"),
        ({"userName": "x" * 1025}, "invalidValue"),
        ({"userName": "a", "emails": [{"value": f"{i}@x"} for i in range(101)]}, "invalidValue"),
    ],
)
def test_bad_user_bodies(body: dict[str, Any], scim_type: str) -> None:
    assert _error(user_from_request, body).scim_type == scim_type


@pytest.mark.parametrize("body", [[], "user", None, 3])
def test_non_object_body_is_invalid_syntax(body: Any) -> None:
    assert _error(user_from_request, body).scim_type == "invalidSyntax"
    assert _error(group_from_request, body).scim_type == "invalidSyntax"


def test_okta_put_full_resource_with_id_meta_groups_and_password() -> None:
    current = user_to_scim({"userName": "a@x", "active": True}, "u1", META, groups=[{"value": "g1"}])
    body = {
        "schemas": [USER_URN],
        "id": "u1",
        "userName": "a@x",
        "name": {"givenName": "New"},
        "active": False,
        "password": "secret",
        "groups": [{"value": "g1", "display": "G"}],
        "meta": {"resourceType": "User", "created": "2020-01-01T00:00:00Z"},
    }
    user = user_from_request(body, current=current)
    assert user == {"schemas": [USER_URN], "userName": "a@x", "name": {"givenName": "New"}, "active": False}


def test_put_with_another_id_is_a_mutability_error() -> None:
    current = user_to_scim({"userName": "a"}, "u1", META)
    assert _error(user_from_request, {"id": "u2", "userName": "a"}, current=current).scim_type == "mutability"


def test_put_without_active_keeps_a_disabled_user_disabled() -> None:
    current = user_to_scim({"userName": "a", "active": False}, "u1", META)
    assert user_from_request({"userName": "a"}, current=current)["active"] is False
    assert user_from_request({"userName": "a"})["active"] is True


def test_full_user_round_trip_through_the_crd_spec() -> None:
    body = {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "bjensen@example.com",
        "externalId": "bjensen",
        "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara",
                 "middleName": "Jane", "honorificPrefix": "Ms.", "honorificSuffix": "III"},
        "displayName": "Babs Jensen",
        "nickName": "Babs",
        "profileUrl": "https://login.example.com/bjensen",
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True},
                   {"value": "babs@jensen.org", "type": "home"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
                       "region": "CA", "postalCode": "91608", "country": "USA",
                       "formatted": "100 Universal City Plaza\nHollywood, CA 91608 USA", "primary": True}],
        "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
        "ims": [{"value": "someaimhandle", "type": "aim"}],
        "photos": [{"value": "https://photos.example.com/profilephoto/72930000000Ccne/F", "type": "photo"}],
        "userType": "Employee",
        "title": "Tour Guide",
        "preferredLanguage": "en-US",
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        "active": True,
        "entitlements": [{"value": "premium"}],
        "roles": [{"value": "admin", "display": "Admin"}],
        "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAwTjELMAkGA1UEBhMCVVMx"}],
        ENTERPRISE_URN: {"employeeNumber": "701984", "costCenter": "4130", "organization": "Universal Studios",
                         "division": "Theme Park", "department": "Tour Operations",
                         "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}},
    }
    user = user_from_request(body)
    spec = user_to_spec(user)
    ScimUserSpec.model_validate(spec)  # extra="forbid": nothing the CRD would prune
    out = user_to_scim(spec, "u1", META, groups=[{"value": "g1", "display": "Tour Guides", "type": "direct"}])
    expected = {k: v for k, v in body.items()}
    assert out["schemas"] == [USER_URN, ENTERPRISE_URN]
    assert out["id"] == "u1" and out["meta"] == META
    assert out["groups"] == [{"value": "g1", "display": "Tour Guides", "type": "direct"}]
    for key, value in expected.items():
        if key != "schemas":
            assert out[key] == value, key
    # And back: the representation is accepted as a PUT body unchanged.
    assert user_from_request(out, current=out) == user


def test_user_without_extension_has_core_schema_only() -> None:
    out = user_to_scim(user_to_spec(user_from_request({"userName": "a"})), "u1", META)
    assert out["schemas"] == [USER_URN]
    assert ENTERPRISE_URN not in out and "groups" not in out


def test_group_post_keeps_nested_groups_typed_group() -> None:
    group = group_from_request({
        "schemas": [GROUP_URN],
        "displayName": "Engineering",
        "externalId": "e1",
        "members": [
            {"value": "u1", "display": "Alice"},
            {"value": "g2", "type": "Group"},
            {"value": "g3", "$ref": "https://h/scim/v2/Groups/g3"},
            {"value": "u4", "type": "user"},
            {"value": "u1", "type": "User"},  # duplicate of the first
        ],
    })
    assert group["members"] == [{"value": "u1"}, {"value": "g2", "type": "Group"},
                                {"value": "g3", "type": "Group"}, {"value": "u4", "type": "User"}]
    assert group_to_spec(group) == {"displayName": "Engineering", "externalId": "e1"}
    ScimGroupSpec.model_validate(group_to_spec(group))


def test_microsoft_string_member_is_a_member_id() -> None:
    assert group_from_request({"displayName": "G", "members": ["u1"]})["members"] == [{"value": "u1"}]


@pytest.mark.parametrize(
    "body",
    [
        {"schemas": [GROUP_URN]},
        {"displayName": ""},
        {"displayName": "G", "members": [{"value": "u1", "type": "Device"}]},
        {"displayName": "G", "members": [{"display": "no id"}]},
        {"displayName": "G", "members": {"value": 1}},
    ],
)
def test_bad_group_bodies(body: dict[str, Any]) -> None:
    _error(group_from_request, body)


def test_group_to_scim_renders_members_as_given() -> None:
    meta = {"resourceType": "Group", "location": "https://h/scim/v2/Groups/g1"}
    out = group_to_scim({"displayName": "G", "externalId": "e"}, "g1", meta,
                        [{"value": "u1", "type": "User", "display": "Alice", "$ref": "https://h/scim/v2/Users/u1"},
                         {"value": "g2", "type": "Group", "extra": "dropped"}])
    assert out == {
        "schemas": [GROUP_URN],
        "id": "g1",
        "displayName": "G",
        "externalId": "e",
        "members": [
            {"value": "u1", "type": "User", "display": "Alice", "$ref": "https://h/scim/v2/Users/u1"},
            {"value": "g2", "type": "Group"},
        ],
        "meta": meta,
    }
    assert "members" not in group_to_scim({"displayName": "G"}, "g1", meta, [])


def _crd_limits(schema: dict[str, Any], path: str, out: dict[str, int]) -> None:
    for name, prop in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        if "maxLength" in prop:
            out[here] = prop["maxLength"]
        if prop.get("type") == "array":
            assert prop.get("maxItems") == convert.MAX_ITEMS, here
            _crd_limits(prop["items"], here, out)
        elif prop.get("type") == "object":
            _crd_limits(prop, here, out)


@pytest.mark.parametrize("kind", ["ScimUser", "ScimGroup"])
def test_length_limits_match_the_crds(kind: str) -> None:
    crd = next(c for c in chart.crd_manifests() if c["spec"]["names"]["kind"] == kind)
    limits: dict[str, int] = {}
    _crd_limits(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"], "", limits)
    assert limits
    for path, limit in limits.items():
        assert convert._max_length(path) == limit, path
