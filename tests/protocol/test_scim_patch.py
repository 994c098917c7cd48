"""PATCH (RFC 7644 section 3.5.2) as Entra ID, Okta and the RFC send it (../shared/docs/idp-behaviour.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from typed_requests import user_from_request

from scim_endpoint.convert import group_to_scim, user_to_scim, user_to_spec
from scim_endpoint.errors import ScimError
from scim_endpoint.patch import apply_patch
from scim_endpoint.schema import ENTERPRISE_URN, GROUP_URN, PATCH_URN, USER_URN

USER_META = {"resourceType": "User", "location": "https://h/scim/v2/Users/u1", "version": 'W/"3"'}
GROUP_META = {"resourceType": "Group", "location": "https://h/scim/v2/Groups/g1", "version": 'W/"5"'}


def ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


def make_user(**extra: Any) -> dict[str, Any]:
    body = {"schemas": [USER_URN], "userName": "alice@example.com", "active": True,
            "emails": [{"value": "alice@example.com", "type": "work", "primary": True}], **extra}
    return user_to_scim(user_to_spec(user_from_request(body)), "u1", USER_META,
                        groups=[{"value": "g9", "display": "Readers", "type": "direct"}])


def make_group(*members: dict[str, Any], name: str = "Engineering") -> dict[str, Any]:
    return group_to_scim({"displayName": name, "externalId": "ext-g1"}, "g1", GROUP_META, list(members))


def member_changes(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(added, removed) members between two member lists, compared by ``value``."""
    old_ids = {m["value"] for m in old or []}
    new_ids = {m["value"] for m in new or []}
    added = [m for m in new or [] if m["value"] not in old_ids]
    removed = [m for m in old or [] if m["value"] not in new_ids]
    return added, removed


def patch_error(resource: dict[str, Any], body: Any, resource_type: str = "User") -> ScimError:
    before = copy.deepcopy(resource)
    with pytest.raises(ScimError) as info:
        apply_patch(resource, body, resource_type)
    assert info.value.status == 400
    assert resource == before
    return info.value


# --- Microsoft Entra ID --------------------------------------------------------------------------


def test_entra_capitalised_ops_and_string_boolean() -> None:
    user = make_user()
    out = apply_patch(user, ops({"op": "Replace", "path": "active", "value": "False"}), "User")
    assert out["active"] is False
    out = apply_patch(out, ops({"op": "Replace", "path": "Active", "value": "True"}), "User")
    assert out["active"] is True


def test_entra_attribute_names_case_insensitive() -> None:
    out = apply_patch(make_user(), ops({"op": "Add", "path": "NAME.GIVENNAME", "value": "Al"},
                                       {"op": "Replace", "path": "DisplayName", "value": "Al Ice"}), "User")
    assert out["name"] == {"givenName": "Al"}
    assert out["displayName"] == "Al Ice"


def test_entra_pathless_replace_with_dotted_and_urn_keys() -> None:
    body = ops({"op": "Replace", "value": {
        "name.givenName": "A",
        "name.familyName": "B",
        f"{ENTERPRISE_URN}:department": "X",
        "active": False,
        "emails[type eq \"work\"].value": "new@example.com",
    }})
    out = apply_patch(make_user(), body, "User")
    assert out["name"] == {"givenName": "A", "familyName": "B"}
    assert out[ENTERPRISE_URN] == {"department": "X"}
    assert out["schemas"] == [USER_URN, ENTERPRISE_URN]
    assert out["active"] is False
    assert out["emails"] == [{"value": "new@example.com", "type": "work", "primary": True}]
    assert user_to_spec(out)["enterprise"] == {"department": "X"}


def test_entra_manager_add_with_ref_null_array() -> None:
    body = ops({"op": "Add", "path": f"{ENTERPRISE_URN}:manager", "value": [{"$ref": None, "value": "m-42"}]})
    out = apply_patch(make_user(), body, "User")
    assert out[ENTERPRISE_URN] == {"manager": {"value": "m-42"}}
    assert user_to_spec(out)["enterprise"] == {"manager": {"value": "m-42"}}


def test_entra_manager_replace_and_remove() -> None:
    user = apply_patch(make_user(), ops({"op": "Add", "path": f"{ENTERPRISE_URN}:manager", "value": "m1"}), "User")
    out = apply_patch(user, ops({"op": "Replace", "path": f"{ENTERPRISE_URN}:manager.value", "value": "m2"}),
                      "User")
    assert out[ENTERPRISE_URN]["manager"] == {"value": "m2"}
    out = apply_patch(out, ops({"op": "Remove", "path": f"{ENTERPRISE_URN}:manager"}), "User")
    assert ENTERPRISE_URN not in out and out["schemas"] == [USER_URN]


def test_entra_add_members_then_remove_with_value_list() -> None:
    group = make_group()
    out = apply_patch(group, ops({"op": "Add", "path": "members",
                                  "value": [{"value": "u1"}, {"value": "u2"}]}), "Group")
    assert [m["value"] for m in out["members"]] == ["u1", "u2"]
    out = apply_patch(out, ops({"op": "Remove", "path": "members", "value": [{"value": "u1"}]}), "Group")
    assert out["members"] == [{"value": "u2"}]


def test_entra_remove_member_with_filter() -> None:
    group = make_group({"value": "u1", "type": "User"}, {"value": "u2", "type": "User"})
    out = apply_patch(group, ops({"op": "Remove", "path": 'members[value eq "u2"]'}), "Group")
    assert out["members"] == [{"value": "u1", "type": "User"}]


def test_entra_nested_group_member_stays_a_group() -> None:
    group = make_group({"value": "u1", "type": "User"})
    body = ops({"op": "Add", "path": "members", "value": [{"value": "g2", "type": "Group"}]})
    out = apply_patch(group, body, "Group")
    assert out["members"] == [{"value": "u1", "type": "User"}, {"value": "g2", "type": "Group"}]
    added, removed = member_changes(group["members"], out["members"])
    assert added == [{"value": "g2", "type": "Group"}] and removed == []


def test_entra_add_existing_member_is_a_no_op() -> None:
    group = make_group({"value": "u1", "type": "User"})
    out = apply_patch(group, ops({"op": "Add", "path": "members", "value": [{"value": "u1"}]}), "Group")
    assert out["members"] == [{"value": "u1", "type": "User"}]


def test_entra_add_work_email_through_filter_creates_it() -> None:
    user = make_user(emails=[])
    out = apply_patch(user, ops({"op": "Add", "path": 'emails[type eq "work"].value', "value": "w@x.com"}), "User")
    assert out["emails"] == [{"type": "work", "value": "w@x.com"}]
    out = apply_patch(out, ops({"op": "Replace", "path": 'emails[type eq "work"].value', "value": "v@x.com"}),
                      "User")
    assert out["emails"] == [{"type": "work", "value": "v@x.com"}]


def test_entra_group_rename_with_path() -> None:
    out = apply_patch(make_group(), ops({"op": "Replace", "path": "displayName", "value": "Renamed"}), "Group")
    assert out["displayName"] == "Renamed"


# --- Okta ----------------------------------------------------------------------------------------


def test_okta_pathless_active_replace() -> None:
    out = apply_patch(make_user(), ops({"op": "replace", "value": {"active": False}}), "User")
    assert out["active"] is False
    assert out["id"] == "u1" and out["meta"] == USER_META and out["groups"] == make_user()["groups"]


def test_okta_mixed_remove_and_add_in_one_request() -> None:
    group = make_group({"value": "u1", "type": "User"}, {"value": "u2", "type": "User"})
    body = ops(
        {"op": "replace", "value": {"id": "g1", "displayName": "Engineering"}},
        {"op": "remove", "path": 'members[value eq "u1"]'},
        {"op": "add", "path": "members", "value": [{"value": "u3", "display": "Carol"}, {"value": "u4"}]},
    )
    out = apply_patch(group, body, "Group")
    assert [m["value"] for m in out["members"]] == ["u2", "u3", "u4"]
    added, removed = member_changes(group["members"], out["members"])
    assert [m["value"] for m in added] == ["u3", "u4"]
    assert [m["value"] for m in removed] == ["u1"]


def test_okta_rename_via_pathless_replace_with_id() -> None:
    out = apply_patch(make_group(), ops({"op": "replace", "value": {"id": "g1", "displayName": "New Name"}}),
                      "Group")
    assert out["displayName"] == "New Name" and out["id"] == "g1"


def test_okta_pathless_replace_with_another_id_is_refused() -> None:
    error = patch_error(make_group(), ops({"op": "replace", "value": {"id": "g2", "displayName": "X"}}), "Group")
    assert error.scim_type == "mutability"


def test_okta_replace_members_entirely() -> None:
    group = make_group({"value": "u1", "type": "User"}, {"value": "u2", "type": "User"})
    out = apply_patch(group, ops({"op": "replace", "path": "members", "value": [{"value": "u3"}]}), "Group")
    assert out["members"] == [{"value": "u3"}]


# --- RFC 7644 section 3.5.2 ----------------------------------------------------------------------


def test_add_to_multi_valued_appends_and_primary_moves() -> None:
    body = ops({"op": "add", "path": "emails", "value": [{"value": "b@x", "type": "home", "primary": True}]})
    out = apply_patch(make_user(), body, "User")
    assert out["emails"] == [{"value": "alice@example.com", "type": "work", "primary": False},
                             {"value": "b@x", "type": "home", "primary": True}]


def test_pathless_add_merges_complex_and_appends_lists() -> None:
    body = ops({"op": "add", "value": {"name": {"givenName": "A"}, "phoneNumbers": [{"value": "1"}],
                                       "nickName": "Al", "password": "pw", "schemas": [USER_URN]}})
    user = apply_patch(make_user(name={"familyName": "F"}), body, "User")
    assert user["name"] == {"familyName": "F", "givenName": "A"}
    assert user["phoneNumbers"] == [{"value": "1"}]
    assert user["nickName"] == "Al"
    assert "password" not in user


def test_replace_complex_merges_sub_attributes() -> None:
    body = ops({"op": "replace", "path": "name", "value": {"givenName": "G"}})
    out = apply_patch(make_user(name={"familyName": "F", "givenName": "X"}), body, "User")
    assert out["name"] == {"familyName": "F", "givenName": "G"}


def test_replace_filtered_value_and_sub_attribute() -> None:
    user = make_user(emails=[{"value": "w@x", "type": "work"}, {"value": "h@x", "type": "home"}])
    out = apply_patch(user, ops({"op": "replace", "path": 'emails[type eq "home"]',
                                 "value": {"value": "h2@x", "type": "home"}}), "User")
    assert out["emails"] == [{"value": "w@x", "type": "work"}, {"value": "h2@x", "type": "home"}]
    out = apply_patch(out, ops({"op": "replace", "path": 'emails[value ew "@X"].type', "value": "other"}), "User")
    assert [e["type"] for e in out["emails"]] == ["other", "other"]


def test_replace_through_non_eq_filter_without_match_is_no_target() -> None:
    body = ops({"op": "replace", "path": 'emails[value co "nowhere"].type', "value": "home"})
    assert patch_error(make_user(), body).scim_type == "noTarget"


def test_remove_filtered_sub_attribute_and_values() -> None:
    user = make_user(emails=[{"value": "w@x", "type": "work"}, {"value": "h@x", "type": "home"}])
    out = apply_patch(user, ops({"op": "remove", "path": 'emails[type eq "work"].type'}), "User")
    assert out["emails"] == [{"value": "w@x"}, {"value": "h@x", "type": "home"}]
    out = apply_patch(out, ops({"op": "remove", "path": 'emails[value eq "h@x"]'}), "User")
    assert out["emails"] == [{"value": "w@x"}]
    out = apply_patch(out, ops({"op": "remove", "path": "emails"}), "User")
    assert "emails" not in out


def test_remove_with_filter_matching_nothing_changes_nothing() -> None:
    group = make_group({"value": "u1", "type": "User"})
    out = apply_patch(group, ops({"op": "remove", "path": 'members[value eq "absent"]'}), "Group")
    assert out["members"] == [{"value": "u1", "type": "User"}]


def test_remove_all_members() -> None:
    group = make_group({"value": "u1", "type": "User"}, {"value": "g2", "type": "Group"})
    out = apply_patch(group, ops({"op": "remove", "path": "members"}), "Group")
    assert "members" not in out
    assert member_changes(group["members"], out.get("members"))[1] == group["members"]


def test_remove_simple_and_extension_attributes() -> None:
    user = make_user(title="T", **{ENTERPRISE_URN: {"department": "D", "costCenter": "C"}})
    out = apply_patch(user, ops({"op": "remove", "path": "title"},
                                {"op": "remove", "path": f"{ENTERPRISE_URN}:department"}), "User")
    assert "title" not in out
    assert out[ENTERPRISE_URN] == {"costCenter": "C"}
    out = apply_patch(out, ops({"op": "remove", "path": ENTERPRISE_URN}), "User")
    assert ENTERPRISE_URN not in out


def test_add_whole_extension_by_urn_path() -> None:
    out = apply_patch(make_user(), ops({"op": "add", "path": ENTERPRISE_URN,
                                        "value": {"Department": "D", "manager": {"value": "m"}}}), "User")
    assert out[ENTERPRISE_URN] == {"department": "D", "manager": {"value": "m"}}


def test_errata_comparison_path_spelling() -> None:
    user = make_user(emails=[{"value": "w@x", "type": "work"}, {"value": "h@x", "type": "home"}])
    out = apply_patch(user, ops({"op": "remove", "path": 'emails.type eq "home"'}), "User")
    assert out["emails"] == [{"value": "w@x", "type": "work"}]


def test_replace_with_null_unassigns() -> None:
    out = apply_patch(make_user(title="T"), ops({"op": "replace", "path": "title", "value": None}), "User")
    assert "title" not in out


def test_microsoft_string_member_value() -> None:
    out = apply_patch(make_group(), ops({"op": "add", "path": "members", "value": "string id 1"}), "Group")
    assert out["members"] == [{"value": "string id 1"}]


def test_input_is_never_mutated() -> None:
    group = make_group({"value": "u1", "type": "User"})
    before = copy.deepcopy(group)
    apply_patch(group, ops({"op": "add", "path": "members", "value": [{"value": "u2"}]},
                           {"op": "replace", "path": "displayName", "value": "Z"}), "Group")
    assert group == before


def test_result_is_valid_for_put() -> None:
    out = apply_patch(make_user(), ops({"op": "replace", "path": "userName", "value": "ryan3"}), "User")
    assert user_from_request(out, current=out)["userName"] == "ryan3"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ({"Operations": [{"op": "add", "path": "title", "value": "x"}]}, "invalidSyntax"),
        ({"schemas": [USER_URN], "Operations": [{"op": "add", "path": "title", "value": "x"}]}, "invalidSyntax"),
        ({"schemas": [PATCH_URN]}, "invalidSyntax"),
        ({"schemas": [PATCH_URN], "Operations": []}, "invalidSyntax"),
        ({"schemas": [PATCH_URN], "Operations": {"op": "add"}}, "invalidSyntax"),
        (ops({"op": "jump", "path": "title", "value": "x"}), "invalidSyntax"),
        (ops({"path": "title", "value": "x"}), "invalidSyntax"),
        (ops("add"), "invalidSyntax"),
        (ops({"op": "add", "path": "title"}), "invalidSyntax"),
        (ops({"op": "remove"}), "noTarget"),
        (ops({"op": "add", "path": "nosuch", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": "name.nosuch", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": "emails[type eq", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": "title[value eq \"x\"]", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": 'emails[nosuch eq "x"]', "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": "urn:example:nosuch:2.0:User:thing", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": 5, "value": "x"}), "invalidPath"),
        (ops({"op": "remove", "path": "userName"}), "invalidValue"),
        (ops({"op": "replace", "path": "userName", "value": None}), "invalidValue"),
        (ops({"op": "replace", "path": "id", "value": "x"}), "mutability"),
        (ops({"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}), "mutability"),
        (ops({"op": "add", "path": "groups", "value": [{"value": "g1"}]}), "mutability"),
        (ops({"op": "replace", "path": "active", "value": "maybe"}), "invalidValue"),
        (ops({"op": "replace", "path": "userName", "value": 7}), "invalidValue"),
        (ops({"op": "replace", "value": "not an object"}), "invalidValue"),
        (ops({"op": "add", "path": "emails", "value": [{"value": "a", "primary": True},
                                                        {"value": "b", "primary": True}]}), "invalidValue"),
    ],
)
def test_bad_user_patches(body: Any, scim_type: str) -> None:
    assert patch_error(make_user(), body).scim_type == scim_type


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        (ops({"op": "remove", "path": "displayName"}), "invalidValue"),
        (ops({"op": "add", "path": "members", "value": [{"value": "u1", "type": "Robot"}]}), "invalidValue"),
        (ops({"op": "add", "path": "members", "value": [{"display": "no id"}]}), "invalidValue"),
        (ops({"op": "replace", "path": 'members[value eq "u1"].value', "value": "u2"}), "mutability"),
        (ops({"op": "replace", "path": 'members[value eq "u1"].display', "value": "x"}), "mutability"),
        (ops({"op": "add", "path": "userName", "value": "x"}), "invalidPath"),
        (ops({"op": "add", "path": "members.value", "value": "u2"}), "mutability"),
        (ops({"op": "add", "path": 'members[value eq "u1"].type', "value": "Group"}), "mutability"),
    ],
)
def test_bad_group_patches(body: Any, scim_type: str) -> None:
    group = make_group({"value": "u1", "type": "User"})
    assert patch_error(group, body, "Group").scim_type == scim_type


def test_schemas_and_group_type_in_result() -> None:
    out = apply_patch(make_group(), ops({"op": "add", "path": "externalId", "value": "e2"}), "Group")
    assert out["schemas"] == [GROUP_URN] and out["externalId"] == "e2" and out["meta"] == GROUP_META


def test_adding_an_existing_primary_value_keeps_it_primary() -> None:
    user = make_user(emails=[{"value": "a@x", "primary": True}, {"value": "b@x"}])
    out = apply_patch(user, ops({"op": "add", "path": "emails", "value": [{"value": "a@x", "primary": True}]}),
                      "User")
    assert out["emails"] == [{"value": "a@x", "primary": True}, {"value": "b@x"}]


def test_typing_a_new_member_through_a_filter_path() -> None:
    out = apply_patch(make_group(), ops({"op": "add", "path": 'members[value eq "g7"].type', "value": "group"}),
                      "Group")
    assert out["members"] == [{"value": "g7", "type": "Group"}]


def test_entra_address_sub_attributes_build_one_work_address() -> None:
    body = ops(
        {"op": "Add", "path": 'addresses[type eq "work"].streetAddress', "value": "1 Main St"},
        {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
        {"op": "Add", "path": 'addresses[type eq "work"].postalCode', "value": "12345"},
        {"op": "Replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555"},
        {"op": "Add", "path": "roles", "value": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole",
                                                  "value": "Admin"}]},
    )
    out = apply_patch(make_user(), body, "User")
    assert out["addresses"] == [{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield",
                                 "postalCode": "12345"}]
    assert out["phoneNumbers"] == [{"type": "mobile", "value": "+1 555"}]
    assert out["roles"] == [{"primary": True, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]
    assert user_to_spec(out)["addresses"] == out["addresses"]


# ---- enterprise attributes named without their URN, single values in multi-valued shapes ---------
@pytest.mark.parametrize("path", ["department", "Department", f"{ENTERPRISE_URN}:department"])
def test_enterprise_attribute_by_bare_or_qualified_path(path: str) -> None:
    out = apply_patch(make_user(), ops({"op": "Add", "path": path, "value": "Research"}), "User")
    assert out[ENTERPRISE_URN] == {"department": "Research"}


@pytest.mark.parametrize("value", ["m1", {"value": "m1"}, [{"$ref": None, "value": "m1"}], ["m1"]])
def test_bare_manager_path_in_every_shape(value: Any) -> None:
    out = apply_patch(make_user(), ops({"op": "Replace", "path": "manager", "value": value}), "User")
    assert out[ENTERPRISE_URN] == {"manager": {"value": "m1"}}


@pytest.mark.parametrize("value", [["Eng"], [{"value": "Eng"}], {"value": "Eng"}, {"value": "Eng", "primary": True}])
def test_single_valued_attribute_unwrapped(value: Any) -> None:
    out = apply_patch(make_user(), ops({"op": "Replace", "path": "title", "value": value}), "User")
    assert out["title"] == "Eng"


@pytest.mark.parametrize("value", [["a", "b"], [], {"value": "a", "other": 1}])
def test_single_valued_attribute_still_refuses_real_lists_and_objects(value: Any) -> None:
    with pytest.raises(ScimError) as info:
        apply_patch(make_user(), ops({"op": "Replace", "path": "title", "value": value}), "User")
    assert info.value.scim_type == "invalidValue"


def test_core_attribute_wins_over_an_extension_of_the_same_name() -> None:
    # "displayName" is core (and a sub-attribute of manager, not an extension attribute): it stays core.
    out = apply_patch(make_user(), ops({"op": "Replace", "path": "displayName", "value": "Al"}), "User")
    assert out["displayName"] == "Al" and ENTERPRISE_URN not in out
