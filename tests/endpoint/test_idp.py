"""What Microsoft Entra ID, Okta and OneLogin really send (docs/idp-behaviour.md), end to end over HTTP,
asserting the custom resources they leave behind."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from scim_http import ENTERPRISE, GROUP, USER, Scim, assert_error, patch_body, user_body
from stored import list_objects, stored_claims, stored_group, stored_members, stored_shards, stored_user

from scim_contract import SHARD, claim_name


def q(expr: str) -> str:
    return quote(expr, safe="")


def where(path: str, expr: str, extra: str = "") -> str:
    """``path?filter=expr`` (URL-encoded) followed by ``extra`` query parameters."""
    return f"{path}?filter={q(expr)}{extra}"


async def new_user(scim: Scim, user_name: str, **extra: Any) -> str:
    resp = await scim.post("/Users", user_body(user_name, **extra))
    assert resp.status == 201, resp.text
    return str(resp.body["id"])


async def new_group(scim: Scim, name: str, members: list[dict[str, Any]] | None = None) -> str:
    resp = await scim.post("/Groups", {"schemas": [GROUP], "displayName": name, "members": members or []})
    assert resp.status == 201, resp.text
    return str(resp.body["id"])


# ---- Microsoft Entra ID -------------------------------------------------------------------------
async def test_entra_test_connection_with_a_random_filter_is_an_empty_list(scim: Scim) -> None:
    resp = await scim.get(where("/Users", f'userName eq "{uuid.uuid4()}"'))
    assert resp.status == 200
    assert resp.body == {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0,
                         "itemsPerPage": 0, "startIndex": 1, "Resources": []}
    assert_error(await scim.get(where("/Users", 'userName eq "x"'), token="wrong"), 401)


async def test_entra_soft_delete_with_string_false_keeps_the_user_listed(scim: Scim) -> None:
    uid = await new_user(scim, "soft@contoso.com", externalId="ext-soft")
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "Replace", "path": "active", "value": "False"}))
    assert resp.status == 200 and resp.body["active"] is False
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["active"] is False
    listed = await scim.get(where("/Users", 'userName eq "soft@contoso.com"'))
    assert listed.body["totalResults"] == 1 and listed.body["Resources"][0]["active"] is False
    by_external = await scim.get(where("/Users", 'externalId eq "ext-soft"'))
    assert [r["id"] for r in by_external.body["Resources"]] == [uid]


async def test_entra_group_created_empty_then_filled_and_emptied(scim: Scim) -> None:
    users = [await new_user(scim, f"e{i}@contoso.com") for i in range(4)]
    gid = await new_group(scim, "Entra Group")
    assert await stored_shards(scim.api, scim.namespace, gid) == []
    add = await scim.patch(f"/Groups/{gid}", patch_body({"op": "Add", "path": "members",
                                                         "value": [{"value": u} for u in users]}))
    assert add.status == 204 and add.text == ""
    assert await stored_members(scim.api, scim.namespace, gid) == set(users)
    # Default job: removal by a value list, no filter.
    rm = await scim.patch(f"/Groups/{gid}", patch_body({"op": "Remove", "path": "members",
                                                        "value": [{"value": users[0]}]}))
    assert rm.status == 204
    assert await stored_members(scim.api, scim.namespace, gid) == set(users[1:])
    # aadOptscim062020: removal through a value filter.
    rm = await scim.patch(f"/Groups/{gid}", patch_body({"op": "Remove", "path": f'members[value eq "{users[1]}"]'}))
    assert rm.status == 204
    assert await stored_members(scim.api, scim.namespace, gid) == set(users[2:])
    # The client may ask for the result instead of 204.
    shown = await scim.call("PATCH", f"/Groups/{gid}?excludedAttributes=members",
                            patch_body({"op": "Add", "path": "members", "value": [{"value": users[0]}]}))
    assert shown.status == 200 and shown.body["id"] == gid and "members" not in shown.body
    assert await stored_members(scim.api, scim.namespace, gid) == {users[0], *users[2:]}


async def test_entra_group_lookup_by_display_name_without_members(scim: Scim) -> None:
    uid = await new_user(scim, "lookup@contoso.com")
    gid = await new_group(scim, "Finance", [{"value": uid}])
    resp = await scim.get(where("/Groups", 'displayName eq "Finance"', "&excludedAttributes=members"))
    assert resp.body["totalResults"] == 1
    assert resp.body["Resources"][0]["id"] == gid and "members" not in resp.body["Resources"][0]


async def test_entra_pathless_replace_with_dotted_and_urn_keys(scim: Scim) -> None:
    uid = await new_user(scim, "dotted@contoso.com", name={"givenName": "Old", "familyName": "Name"})
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "Replace", "value": {
        "name.givenName": "Alex", f"{ENTERPRISE}:department": "Research", "active": False}}))
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None
    assert obj["spec"]["name"] == {"givenName": "Alex", "familyName": "Name"}
    assert obj["spec"]["enterprise"]["department"] == "Research"
    assert obj["spec"]["active"] is False


async def test_entra_manager_is_added_with_an_array_value(scim: Scim) -> None:
    boss = await new_user(scim, "boss@contoso.com")
    uid = await new_user(scim, "report@contoso.com")
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "Add", "path": f"{ENTERPRISE}:manager",
                                                         "value": [{"$ref": None, "value": boss}]}))
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["enterprise"]["manager"]["value"] == boss


async def test_entra_post_with_meta_nulls_and_enterprise(scim: Scim) -> None:
    resp = await scim.post("/Users", {
        "schemas": [USER, ENTERPRISE], "userName": "full@contoso.com", "active": True, "nickName": None,
        "meta": {"resourceType": "User"}, "emails": [{"type": "work", "value": "full@contoso.com", "primary": True}],
        ENTERPRISE: {"employeeNumber": "42", "costCenter": None}})
    assert resp.status == 201, resp.text
    obj = await stored_user(scim.api, scim.namespace, resp.body["id"])
    assert obj is not None
    assert obj["spec"]["enterprise"] == {"employeeNumber": "42"}
    assert "nickName" not in obj["spec"]
    found = await scim.get(where("/Users", 'emails[type eq "work"].value eq "full@contoso.com"'))
    assert [r["id"] for r in found.body["Resources"]] == [resp.body["id"]]
    both = await scim.get(where("/Users", 'userName eq "full@contoso.com" and active eq true'))
    assert both.body["totalResults"] == 1


async def test_entra_nested_group_members_stay_groups(scim: Scim) -> None:
    child = await new_group(scim, "Child")
    uid = await new_user(scim, "nested@contoso.com")
    parent = await new_group(scim, "Parent")
    resp = await scim.patch(f"/Groups/{parent}", patch_body({"op": "Add", "path": "members", "value": [
        {"value": child, "type": "Group"}, {"value": uid}]}))
    assert resp.status == 204, resp.text
    shards = await stored_shards(scim.api, scim.namespace, parent)
    assert {g for s in shards for g in s["spec"].get("groups", [])} == {child}
    assert {u for s in shards for u in s["spec"].get("users", [])} == {uid}
    got = await scim.get(f"/Groups/{parent}")
    assert {(m["value"], m["type"]) for m in got.body["members"]} == {(child, "Group"), (uid, "User")}


# ---- Okta -----------------------------------------------------------------------------------------
async def test_okta_lookup_matches_user_name_case_insensitively(scim: Scim) -> None:
    uid = await new_user(scim, "okta.user@example.com")
    resp = await scim.get(where("/Users", 'userName eq "OKTA.USER@EXAMPLE.COM"', "&startIndex=1&count=100"))
    assert resp.status == 200 and [r["id"] for r in resp.body["Resources"]] == [uid]


async def test_okta_post_with_password_never_stores_it(scim: Scim) -> None:
    resp = await scim.post("/Users", {"schemas": [USER], "userName": "pw@example.com", "active": True,
                                      "password": "Sup3r-Secret!", "groups": [],
                                      "name": {"givenName": "Pat", "familyName": "Word"},
                                      "emails": [{"primary": True, "value": "pw@example.com", "type": "work"}]})
    assert resp.status == 201, resp.text
    assert resp.body["userName"] == "pw@example.com" and resp.body["name"]["givenName"] == "Pat"
    assert "password" not in resp.body
    obj = await stored_user(scim.api, scim.namespace, resp.body["id"])
    assert obj is not None and "Sup3r-Secret!" not in str(obj) and "password" not in obj["spec"]


async def test_okta_duplicate_is_409_with_a_scim_error(scim: Scim) -> None:
    await new_user(scim, "twice@example.com")
    dup = await scim.post("/Users", user_body("twice@example.com", password="x", groups=[]))
    assert_error(dup, 409, "uniqueness")
    assert len(await list_objects(scim.api, scim.namespace, "scimusers")) == 1


async def test_okta_profile_update_is_a_full_put(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("put@example.com", name={"givenName": "A", "familyName": "B"},
                                                  password="pw", groups=[]))
    full = dict(created.body)
    full["name"] = {"givenName": "Alice", "familyName": "B"}
    full["title"] = "Lead"
    full["groups"] = []
    resp = await scim.put(f"/Users/{full['id']}", full)
    assert resp.status == 200, resp.text
    obj = await stored_user(scim.api, scim.namespace, full["id"])
    assert obj is not None and obj["spec"]["name"]["givenName"] == "Alice" and obj["spec"]["title"] == "Lead"


async def test_okta_deactivation_is_a_pathless_replace(scim: Scim) -> None:
    uid = await new_user(scim, "deact@example.com")
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "value": {"active": False}}))
    assert resp.status == 200 and resp.body["active"] is False
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["active"] is False
    listed = await scim.get(where("/Users", 'userName eq "deact@example.com"'))
    assert listed.body["totalResults"] == 1


async def test_okta_group_push_mixed_remove_and_add_then_rename(scim: Scim) -> None:
    users = [await new_user(scim, f"push{i}@example.com") for i in range(3)]
    gid = await new_group(scim, "Pushed", [])
    await scim.patch(f"/Groups/{gid}", patch_body({"op": "add", "path": "members",
                                                   "value": [{"value": users[0]}, {"value": users[1]}]}))
    mixed = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "value": {"id": gid, "displayName": "Pushed"}},
        {"op": "remove", "path": f'members[value eq "{users[0]}"]'},
        {"op": "add", "path": "members", "value": [{"value": users[2], "display": "push2"}]}))
    assert mixed.status == 204, mixed.text
    assert await stored_members(scim.api, scim.namespace, gid) == {users[1], users[2]}
    renamed = await scim.patch(f"/Groups/{gid}", patch_body({"op": "replace",
                                                             "value": {"id": gid, "displayName": "Pushed 2"}}))
    assert renamed.status == 204
    group = await stored_group(scim.api, scim.namespace, gid)
    assert group is not None and group["spec"]["displayName"] == "Pushed 2"
    assert {c["metadata"]["name"] for c in await stored_claims(scim.api, scim.namespace)
            if c["spec"]["resourceKind"] == "Group"} == {claim_name("Group", "Pushed 2")}
    replaced = await scim.patch(f"/Groups/{gid}", patch_body({"op": "replace", "path": "members",
                                                              "value": [{"value": users[0]}]}))
    assert replaced.status == 204
    assert await stored_members(scim.api, scim.namespace, gid) == {users[0]}
    put = await scim.put(f"/Groups/{gid}", {"schemas": [GROUP], "id": gid, "displayName": "Pushed 2",
                                            "members": [{"value": users[1]}, {"value": users[2]}]})
    assert put.status == 200
    assert await stored_members(scim.api, scim.namespace, gid) == {users[1], users[2]}
    assert (await scim.delete(f"/Groups/{gid}")).status == 204
    assert await list_objects(scim.api, scim.namespace, SHARD.plural) == []


async def test_okta_paging_integers_and_stable_order(scim: Scim) -> None:
    ids = [await new_user(scim, f"okpage{i:02d}@example.com") for i in range(12)]
    pages = [await scim.get(f"/Users?startIndex={s}&count=5") for s in (1, 6, 11)]
    for page, start in zip(pages, (1, 6, 11), strict=True):
        for key in ("totalResults", "itemsPerPage", "startIndex"):
            assert type(page.body[key]) is int
        assert page.body["startIndex"] == start and page.body["totalResults"] == 12
    walked = [r["id"] for p in pages for r in p.body["Resources"]]
    assert sorted(walked) == sorted(ids) and len(walked) == 12
    assert walked == [r["id"] for r in (await scim.get("/Users?count=100")).body["Resources"]]


async def test_okta_404_is_a_scim_error(scim: Scim) -> None:
    assert_error(await scim.get(f"/Users/{uuid.uuid4()}"), 404)
    assert_error(await scim.get(f"/Groups/{uuid.uuid4()}"), 404)
    assert_error(await scim.patch(f"/Groups/{uuid.uuid4()}", patch_body({"op": "add", "path": "members",
                                                                          "value": [{"value": "x"}]})), 404)


async def test_okta_application_json_content_type(scim: Scim) -> None:
    resp = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "JSON"}, content_type="application/json")
    assert resp.status == 201


# ---- OneLogin -------------------------------------------------------------------------------------
async def test_onelogin_string_booleans_from_templates(scim: Scim) -> None:
    resp = await scim.post("/Users", user_body("tpl@example.com", active="false"))
    assert resp.status == 201, resp.text
    obj = await stored_user(scim.api, scim.namespace, resp.body["id"])
    assert obj is not None and obj["spec"]["active"] is False
