"""Every request example of the two providers' own SCIM documentation, replayed against the endpoint
(real API server, the endpoint's ServiceAccount) with the documented effect asserted: the status, the
response body, and the ScimUser/ScimGroup left behind.

Sources: Microsoft Entra "Tutorial: Develop and plan provisioning for a SCIM endpoint" (section
"SCIM protocol requests and responses": user and group operations) and Okta's "SCIM 2.0 Protocol
Reference" (user and group operations). The example ids are the server's, so each test creates the
resource first and substitutes its id; every other field is sent as documented. The enterprise
extension tests cover the shapes Entra's attribute mappings send for it (URN-qualified or bare
paths, manager as an object, a string or a one-element list, single values wrapped in lists)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from scim_http import ENTERPRISE, GROUP, USER, Scim, patch_body
from stored import stored_group, stored_members, stored_user

MS_GROUP_SCHEMA = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def where(path: str, attr: str, value: str, extra: str = "") -> str:
    """``path?[extra&]filter=attr eq "value"``, URL-encoded."""
    expr = quote(f'{attr} eq "{value}"', safe="")
    return f"{path}?{extra}filter={expr}"


# ---- Microsoft Entra: user operations ------------------------------------------------------------
ENTRA_USER = {
    "schemas": [USER, ENTERPRISE],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
    "active": True,
    "emails": [{"primary": True, "type": "work",
                "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"}],
    "meta": {"resourceType": "User"},
    "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
    "roles": [],
}


async def created(scim: Scim, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body of a POST asserted to answer 201."""
    resp = await scim.post(path, body)
    assert resp.status == 201, resp.text
    return dict(resp.body)


async def entra_user(scim: Scim) -> dict[str, Any]:
    return await created(scim, "/Users", ENTRA_USER)


async def test_entra_create_user(scim: Scim) -> None:
    body = await entra_user(scim)
    assert body["schemas"][0] == USER and body["id"]
    for key in ("externalId", "userName", "active", "emails", "name"):
        assert body[key] == ENTRA_USER[key]
    assert body["meta"]["resourceType"] == "User" and body["meta"]["created"] and body["meta"]["lastModified"]
    obj = await stored_user(scim.api, scim.namespace, body["id"])
    assert obj is not None
    spec = obj["spec"]
    assert spec["userName"] == ENTRA_USER["userName"] and spec["externalId"] == ENTRA_USER["externalId"]
    assert spec["active"] is True and spec["emails"] == ENTRA_USER["emails"]
    assert spec["name"] == ENTRA_USER["name"]


async def test_entra_get_user_and_a_missing_one(scim: Scim) -> None:
    created = await entra_user(scim)
    resp = await scim.get(f"/Users/{created['id']}")
    assert resp.status == 200
    assert resp.body["userName"] == ENTRA_USER["userName"] and resp.body["emails"] == ENTRA_USER["emails"]
    missing = await scim.get("/Users/5171a35d82074e068ce2")
    assert missing.status == 404
    assert missing.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert missing.body["status"] == "404"


async def test_entra_get_user_by_query_and_zero_results(scim: Scim) -> None:
    created = await entra_user(scim)
    resp = await scim.get(where("/Users", "userName", ENTRA_USER["userName"]))
    assert resp.status == 200
    assert resp.body["schemas"] == [LIST] and resp.body["totalResults"] == 1 and resp.body["startIndex"] == 1
    assert resp.body["Resources"][0]["id"] == created["id"]
    none = await scim.get(where("/Users", "userName", "non-existent user"))
    assert none.status == 200
    assert none.body["totalResults"] == 0 and none.body.get("Resources", []) == []


async def test_entra_update_user_multi_valued_properties(scim: Scim) -> None:
    uid = (await entra_user(scim))["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body(
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}))
    assert resp.status == 200, resp.text
    assert resp.body["emails"] == [{"value": "updatedEmail@microsoft.com", "type": "work", "primary": True}]
    assert resp.body["name"]["familyName"] == "updatedFamilyName"
    assert resp.body["name"]["givenName"] == "givenName"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None
    assert obj["spec"]["emails"] == [{"value": "updatedEmail@microsoft.com", "type": "work", "primary": True}]
    assert obj["spec"]["name"]["familyName"] == "updatedFamilyName"


async def test_entra_update_user_single_valued_properties(scim: Scim) -> None:
    uid = (await entra_user(scim))["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body(
        {"op": "Replace", "path": "userName", "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}))
    assert resp.status == 200, resp.text
    assert resp.body["userName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["userName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"


async def test_entra_disable_and_delete_user(scim: Scim) -> None:
    uid = (await entra_user(scim))["id"]
    # Documented with "Operations" before "schemas".
    resp = await scim.patch(f"/Users/{uid}", {
        "Operations": [{"op": "Replace", "path": "active", "value": False}],
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]})
    assert resp.status == 200, resp.text
    assert resp.body["active"] is False
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["active"] is False
    # Still returned while inactive, then deleted.
    assert (await scim.get(f"/Users/{uid}")).status == 200
    assert (await scim.delete(f"/Users/{uid}")).status == 204
    assert await stored_user(scim.api, scim.namespace, uid) is None
    assert (await scim.get(f"/Users/{uid}")).status == 404


# ---- Microsoft Entra: group operations -----------------------------------------------------------
ENTRA_GROUP = {
    "schemas": [GROUP, MS_GROUP_SCHEMA],
    "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
    "displayName": "displayName",
    "meta": {"resourceType": "Group"},
}


async def entra_group(scim: Scim) -> dict[str, Any]:
    return await created(scim, "/Groups", ENTRA_GROUP)


async def test_entra_create_group(scim: Scim) -> None:
    body = await entra_group(scim)
    assert body["schemas"] == [GROUP]
    assert body["externalId"] == ENTRA_GROUP["externalId"] and body["displayName"] == "displayName"
    assert body.get("members", []) == []
    assert body["meta"]["resourceType"] == "Group"
    obj = await stored_group(scim.api, scim.namespace, body["id"])
    assert obj is not None
    assert obj["spec"] == {"displayName": "displayName", "externalId": ENTRA_GROUP["externalId"]}


async def test_entra_get_group_and_by_display_name_without_members(scim: Scim) -> None:
    gid = (await entra_group(scim))["id"]
    resp = await scim.get(f"/Groups/{gid}?excludedAttributes=members")
    assert resp.status == 200
    assert resp.body["id"] == gid and resp.body["displayName"] == "displayName" and "members" not in resp.body
    found = await scim.get(where("/Groups", "displayName", "displayName", "excludedAttributes=members&"))
    assert found.status == 200
    assert found.body["totalResults"] == 1
    assert found.body["Resources"][0]["id"] == gid and "members" not in found.body["Resources"][0]


async def test_entra_update_group_name_and_members(scim: Scim) -> None:
    gid = (await entra_group(scim))["id"]
    user = await entra_user(scim)
    renamed = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "Replace", "path": "displayName", "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}))
    assert renamed.status == 204 and not renamed.text
    obj = await stored_group(scim.api, scim.namespace, gid)
    assert obj is not None and obj["spec"]["displayName"] == "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"

    added = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}))
    assert added.status == 204
    assert await stored_members(scim.api, scim.namespace, gid) == {user["id"]}
    removed = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}))
    assert removed.status == 204
    assert await stored_members(scim.api, scim.namespace, gid) == set()

    assert (await scim.delete(f"/Groups/{gid}")).status == 204
    assert await stored_group(scim.api, scim.namespace, gid) is None


# ---- Okta: user operations -----------------------------------------------------------------------
OKTA_USER = {
    "schemas": [USER],
    "userName": "test.user@okta.local",
    "name": {"givenName": "Test", "familyName": "User"},
    "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
    "displayName": "Test User",
    "locale": "en-US",
    "externalId": "00ujl29u0le5T6Aj10h7",
    "groups": [],
    "password": "1mz050nq",
    "active": True,
}


async def okta_user(scim: Scim, **changes: Any) -> dict[str, Any]:
    return await created(scim, "/Users", {**OKTA_USER, **changes})


async def test_okta_lookup_create_and_duplicate(scim: Scim) -> None:
    lookup = await scim.get("/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100",
                            headers={"User-Agent": "Okta SCIM Client 1.0.0"})
    assert lookup.status == 200 and lookup.body["totalResults"] == 0
    body = await okta_user(scim)
    for key in ("userName", "name", "emails", "displayName", "locale", "externalId", "active"):
        assert body[key] == OKTA_USER[key]
    assert body.get("groups", []) == [] and "password" not in body
    obj = await stored_user(scim.api, scim.namespace, body["id"])
    assert obj is not None and "password" not in obj["spec"]
    assert obj["spec"]["locale"] == "en-US" and obj["spec"]["displayName"] == "Test User"
    found = await scim.get("/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100")
    assert found.body["totalResults"] == 1 and found.body["Resources"][0]["id"] == body["id"]
    # The custom-attributes variant (no externalId) of an existing userName: 409 with an Error body.
    duplicate = await scim.post("/Users", {k: v for k, v in OKTA_USER.items() if k != "externalId"})
    assert duplicate.status == 409
    assert duplicate.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


async def test_okta_list_get_put_and_deactivate(scim: Scim) -> None:
    uid = (await okta_user(scim))["id"]
    page = await scim.get("/Users?startIndex=1&count=100")
    assert page.status == 200 and isinstance(page.body["totalResults"], int) and page.body["startIndex"] == 1
    got = await scim.get(f"/Users/{uid}")
    assert got.status == 200 and got.body["id"] == uid
    put = await scim.put(f"/Users/{uid}", {
        "schemas": [USER], "id": uid, "userName": "test.user@okta.local",
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work",
                    "display": "test.user@okta.local"}],
        "active": True, "groups": [], "meta": {"resourceType": "User"}})
    assert put.status == 200, put.text
    assert put.body["name"] == {"givenName": "Another", "middleName": "Excited", "familyName": "User"}
    assert put.body["emails"][0]["display"] == "test.user@okta.local"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["name"]["middleName"] == "Excited"
    assert "displayName" not in obj["spec"], "PUT replaces: what it leaves out is gone"

    off = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "value": {"active": False}}))
    assert off.status == 200, off.text
    assert off.body["active"] is False and off.body["name"]["middleName"] == "Excited"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["active"] is False


# ---- Okta: group operations ----------------------------------------------------------------------
async def test_okta_group_push_rename_membership_and_delete(scim: Scim) -> None:
    first = (await okta_user(scim))["id"]
    second = (await okta_user(scim, userName="second.user@okta.local", externalId="00u2"))["id"]
    created = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []})
    assert created.status == 201, created.text
    gid = created.body["id"]
    assert created.body["displayName"] == "Test SCIMv2" and created.body.get("members", []) == []
    page = await scim.get("/Groups?startIndex=1&count=100")
    assert page.status == 200 and gid in {g["id"] for g in page.body["Resources"]}

    renamed = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv20"}}))
    assert renamed.status in (200, 204), renamed.text
    obj = await stored_group(scim.api, scim.namespace, gid)
    assert obj is not None and obj["spec"]["displayName"] == "Test SCIMv20"

    await scim.patch(f"/Groups/{gid}", patch_body({"op": "add", "path": "members", "value": [{"value": second}]}))
    mixed = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "remove", "path": f'members[value eq "{second}"]'},
        {"op": "add", "path": "members", "value": [{"value": first, "display": "test.user@okta.local"}]}))
    assert mixed.status in (200, 204), mixed.text
    assert await stored_members(scim.api, scim.namespace, gid) == {first}

    full = await scim.patch(f"/Groups/{gid}", patch_body({"op": "replace", "path": "members", "value": [
        {"value": first, "display": "test.user@okta.local"}, {"value": second, "display": "test.user@okta.local"}]}))
    assert full.status in (200, 204), full.text
    assert await stored_members(scim.api, scim.namespace, gid) == {first, second}

    put = await scim.put(f"/Groups/{gid}", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": [
        {"value": first, "display": "test.user@okta.local"}]})
    assert put.status == 200, put.text
    assert put.body["displayName"] == "Test SCIMv2" and [m["value"] for m in put.body["members"]] == [first]
    assert await stored_members(scim.api, scim.namespace, gid) == {first}

    got = await scim.get(f"/Groups/{gid}")
    assert got.status == 200 and [m["value"] for m in got.body["members"]] == [first]
    assert (await scim.delete(f"/Groups/{gid}")).status == 204
    assert await stored_group(scim.api, scim.namespace, gid) is None


# ---- the enterprise extension as Entra's attribute mappings send it ------------------------------
ENTERPRISE_VALUES = {"department": "Human Resources US", "employeeNumber": "100009", "costCenter": "CC-4",
                     "organization": "Contoso", "division": "EMEA"}


async def enterprise_after(scim: Scim, *ops: dict[str, Any]) -> dict[str, Any]:
    """The stored enterprise extension of a new user after one PATCH of ``ops`` (200 asserted)."""
    uid = (await scim.post("/Users", {"schemas": [USER], "userName": f"ext-{len(str(ops))}-{id(ops)}@contoso.com"}
                           )).body["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body(*ops))
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None
    stored = obj["spec"].get("enterprise", {})
    assert resp.body.get(ENTERPRISE, {}) == stored, "the response shows what is stored"
    return dict(stored)


@pytest.mark.parametrize("qualified", [True, False], ids=["urn-path", "bare-path"])
async def test_enterprise_attributes_by_urn_or_bare_path(scim: Scim, qualified: bool) -> None:
    prefix = f"{ENTERPRISE}:" if qualified else ""
    stored = await enterprise_after(scim, *(
        {"op": "Add", "path": f"{prefix}{key}", "value": value} for key, value in ENTERPRISE_VALUES.items()))
    assert stored == ENTERPRISE_VALUES


@pytest.mark.parametrize("value", [
    "boss-1", {"value": "boss-1"}, [{"$ref": None, "value": "boss-1"}], ["boss-1"]],
    ids=["string", "object", "ref-list", "string-list"])
@pytest.mark.parametrize("path", [f"{ENTERPRISE}:manager", "manager"], ids=["urn-path", "bare-path"])
async def test_manager_in_every_shape(scim: Scim, value: Any, path: str) -> None:
    assert await enterprise_after(scim, {"op": "Add", "path": path, "value": value}) == {
        "manager": {"value": "boss-1"}}


@pytest.mark.parametrize("value", [[{"value": "Research"}], ["Research"], {"value": "Research"}],
                         ids=["value-list", "one-element-list", "value-object"])
@pytest.mark.parametrize("path", [f"{ENTERPRISE}:department", "department"], ids=["urn-path", "bare-path"])
async def test_single_valued_attribute_sent_multi_valued(scim: Scim, value: Any, path: str) -> None:
    assert await enterprise_after(scim, {"op": "Replace", "path": path, "value": value}) == {"department": "Research"}


async def test_core_single_valued_attribute_sent_as_a_value_list(scim: Scim) -> None:
    uid = (await scim.post("/Users", {"schemas": [USER], "userName": "titled@contoso.com"})).body["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body(
        {"op": "Add", "path": "title", "value": [{"value": "Engineer"}]},
        {"op": "Replace", "path": "displayName", "value": ["Titled Person"]}))
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["title"] == "Engineer" and obj["spec"]["displayName"] == "Titled Person"


async def test_pathless_replace_with_bare_and_qualified_enterprise_keys(scim: Scim) -> None:
    stored = await enterprise_after(scim, {"op": "Replace", "value": {
        "department": "Tech Infrastructure", f"{ENTERPRISE}:employeeNumber": "42",
        f"{ENTERPRISE}:manager": "boss-2", "active": False}})
    assert stored == {"department": "Tech Infrastructure", "employeeNumber": "42", "manager": {"value": "boss-2"}}


async def test_enterprise_attribute_removed_by_bare_path(scim: Scim) -> None:
    uid = (await scim.post("/Users", {"schemas": [USER, ENTERPRISE], "userName": "rm@contoso.com",
                                      ENTERPRISE: {"department": "D", "costCenter": "C"}})).body["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "Remove", "path": "department"}))
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["enterprise"] == {"costCenter": "C"}


async def test_unknown_bare_path_is_still_refused(scim: Scim) -> None:
    uid = (await scim.post("/Users", {"schemas": [USER], "userName": "strict@contoso.com"})).body["id"]
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "Add", "path": "favouriteColour", "value": "x"}))
    assert resp.status == 400 and resp.body["scimType"] == "invalidPath"
    # A list of several values for a single-valued attribute is refused, and nothing changes.
    many = await scim.patch(f"/Users/{uid}", patch_body(
        {"op": "Replace", "path": "department", "value": [{"value": "A"}, {"value": "B"}]}))
    assert many.status == 400 and many.body["scimType"] == "invalidValue"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and "enterprise" not in obj["spec"]


@pytest.mark.parametrize("qualified", [True, False], ids=["urn-path", "bare-path"])
async def test_filter_on_enterprise_attributes_by_urn_or_bare_name(scim: Scim, qualified: bool) -> None:
    # RFC 7644 section 3.10: a name without its schema URN is the core attribute, else the extension's.
    prefix = f"{ENTERPRISE}:" if qualified else ""
    sales = (await created(scim, "/Users", {
        "schemas": [USER, ENTERPRISE], "userName": "seller@contoso.com",
        ENTERPRISE: {"department": "Sales", "employeeNumber": "701984", "manager": {"value": "boss-7"}}}))["id"]
    await created(scim, "/Users", {"schemas": [USER, ENTERPRISE], "userName": "builder@contoso.com",
                                   ENTERPRISE: {"department": "Engineering", "employeeNumber": "5"}})
    for attr, value in (("department", "sales"), ("employeeNumber", "701984"), ("manager.value", "boss-7")):
        resp = await scim.get(where("/Users", f"{prefix}{attr}", value))
        assert resp.status == 200, resp.text
        assert [r["id"] for r in resp.body["Resources"]] == [sales], attr
    sw = await scim.get("/Users?filter=" + quote(f'{prefix}department sw "Eng"', safe=""))
    assert sw.status == 200 and [r["userName"] for r in sw.body["Resources"]] == ["builder@contoso.com"]
    # The attribute can be asked for and sorted by the same way.
    listed = await scim.get(f"/Users?attributes={quote(prefix + 'department')}&sortBy={quote(prefix + 'department')}")
    assert listed.status == 200, listed.text
    assert [r.get(ENTERPRISE) for r in listed.body["Resources"]] == [
        {"department": "Engineering"}, {"department": "Sales"}]


async def test_filter_on_an_unknown_bare_name_is_still_refused(scim: Scim) -> None:
    resp = await scim.get(where("/Users", "favouriteColour", "blue"))
    assert resp.status == 400 and resp.body["scimType"] == "invalidFilter"
