"""Filters (RFC 7644 section 3.4.2.2), sorting (3.4.2.3) and projection (3.9) over canonical dicts."""

from __future__ import annotations

from typing import Any

import pytest
from typed_requests import user_from_request

from scim_endpoint.convert import group_to_scim, user_to_scim, user_to_spec
from scim_endpoint.errors import ScimError
from scim_endpoint.filters import compile_filter, project, sort_key
from scim_endpoint.schema import ENTERPRISE_URN, USER_URN


def _user(id: str, created: str, **body: Any) -> dict[str, Any]:
    meta = {"resourceType": "User", "created": created, "lastModified": created,
            "location": f"https://h/scim/v2/Users/{id}", "version": 'W/"1"'}
    spec = user_to_spec(user_from_request({"schemas": [USER_URN], **body}))
    return user_to_scim(spec, id, meta, groups=[{"value": "g1", "display": "Readers"}] if id == "u1" else None)


USERS = [
    _user("u1", "2024-01-01T10:00:00Z", userName="Alice@Example.com", externalId="ExtA", displayName="Alice",
          title="Engineer", name={"givenName": "Alice", "familyName": "Smith"},
          emails=[{"value": "alice@example.com", "type": "work", "primary": True},
                  {"value": "alice@home.org", "type": "home"}],
          **{ENTERPRISE_URN: {"department": "R&D", "manager": {"value": "u3"}}}),
    _user("u2", "2024-06-01T10:00:00+02:00", userName="bob@example.com", externalId="extb", active=False,
          displayName="Bob", name={"givenName": "Bob", "familyName": "Employee"},
          emails=[{"value": "bob@example.org", "type": "work"}]),
    _user("u3", "2025-03-01T00:00:00Z", userName="carol", displayName="carol",
          emails=[{"value": "carol@example.com", "type": "home"}]),
]


def ids(expr: str) -> list[str]:
    match = compile_filter(expr, "User")
    return [u["id"] for u in USERS if match(u)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('userName eq "alice@example.com"', ["u1"]),  # caseExact false
        ('USERNAME EQ "ALICE@EXAMPLE.COM"', ["u1"]),  # names and operators case-insensitive
        ('userName ne "alice@example.com"', ["u2", "u3"]),
        ('userName co "EXAMPLE"', ["u1", "u2"]),
        ('userName sw "b"', ["u2"]),
        ('userName ew ".COM"', ["u1", "u2"]),
        ('userName gt "bob@example.com"', ["u3"]),
        ('userName ge "bob@example.com"', ["u2", "u3"]),
        ('userName lt "bob@example.com"', ["u1"]),
        ('userName le "bob@example.com"', ["u1", "u2"]),
        ("title pr", ["u1"]),
        ("name pr", ["u1", "u2"]),
        ("emails pr", ["u1", "u2", "u3"]),
        ('title eq null', ["u2", "u3"]),
        ('title ne null', ["u1"]),
        ('title ne "Engineer"', ["u2", "u3"]),
        ("active eq true", ["u1", "u3"]),
        ("active eq false", ["u2"]),
        ('active eq "False"', ["u2"]),
        ("active ne true", ["u2"]),
        ('externalId eq "exta"', []),  # caseExact true
        ('externalId eq "ExtA"', ["u1"]),
        ('id eq "U1"', []),
        ('id eq "u1"', ["u1"]),
        ('displayName eq "CAROL"', ["u3"]),
        ('name.familyName eq "employee"', ["u2"]),
        ('emails.value co "home"', ["u1"]),
        ('emails co "example.org"', ["u2"]),  # complex multi-valued compares its value
        ('emails[type eq "work"]', ["u1", "u2"]),
        ('emails[type eq "work" and value co "@EXAMPLE.COM"]', ["u1"]),
        ('emails[type eq "home" or primary eq true]', ["u1", "u3"]),
        ('emails[not (type eq "work")]', ["u1", "u3"]),
        ('emails[type eq "work"].value eq "bob@example.org"', ["u2"]),  # Entra's matching filter
        ('emails[type eq "home"].value eq "bob@example.org"', []),
        ('groups.value eq "g1"', ["u1"]),
        ('groups eq "g1"', ["u1"]),
        (f'{ENTERPRISE_URN}:department eq "r&d"', ["u1"]),
        (f'{ENTERPRISE_URN}:manager.value eq "u3"', ["u1"]),
        (f'{USER_URN}:userName sw "carol"', ["u3"]),
        (f'schemas eq "{ENTERPRISE_URN}"', ["u1"]),
        ('meta.created gt "2024-05-01T00:00:00Z"', ["u2", "u3"]),
        ('meta.created lt "2024-06-01T09:00:00Z"', ["u1", "u2"]),  # +02:00 is 08:00Z
        ('meta.created eq "2024-06-01T08:00:00Z"', ["u2"]),
        ('meta.created ge "2024-06-01T08:00:00.0000000+00:00"', ["u2", "u3"]),
        ('meta.lastModified le "2024-01-01T10:00:00Z"', ["u1"]),
        ('meta.created gt "2015-10-10T14:38:21.8617979-07:00"', ["u1", "u2", "u3"]),  # 7 fraction digits
        ('meta.resourceType eq "User"', ["u1", "u2", "u3"]),
        ('meta.version eq "W/\\"1\\""', ["u1", "u2", "u3"]),
    ],
)
def test_operators_and_attributes(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # and binds tighter than or: u3 or (u2 and title pr) -> only u3
        ('userName eq "carol" or userName sw "bob" and title pr', ["u3"]),
        ('(userName eq "carol" or userName sw "bob") and active eq false', ["u2"]),
        ('not (userName eq "carol") and not (active eq false)', ["u1"]),
        ('not (userName eq "carol" or active eq false)', ["u1"]),
        ('userName sw "a" and (title pr or displayName eq "x") and emails[type eq "home"]', ["u1"]),
        ('name.familyName eq "Employee" and (emails.value co "example.com" or emails.value co "example.org")',
         ["u2"]),
    ],
)
def test_precedence_not_and_grouping(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "   ",
        'userName regex "x"',
        'userName eq "x" and',
        "userName eq",
        '(userName eq "x"',
        'userName eq "unterminated',
        'nosuch eq "x"',
        'name.nosuch eq "x"',
        'password eq "secret"',
        f'{ENTERPRISE_URN}:nosuch eq "x"',
        'urn:example:other:2.0:User:userName eq "x"',
        "userName eq 1",
        "userName eq true",
        "active gt false",
        'active eq "yes"',
        'active co "t"',
        'name eq "x"',
        "meta gt 1",
        'addresses eq "x"',
        'meta.created eq "yesterday"',
        'meta.created co "2024"',
        'meta.created gt 5',
        'userName gt null',
        'userName[value eq "x"]',
        'emails[nosuch eq "x"]',
        'emails[value.sub eq "x"]',
        'x509Certificates.value gt "AA"',
    ],
)
def test_invalid_filters_are_refused(expr: str) -> None:
    with pytest.raises(ScimError) as info:
        compile_filter(expr, "User")
    assert info.value.status == 400 and info.value.scim_type == "invalidFilter"


def test_group_filters() -> None:
    meta = {"resourceType": "Group", "location": "https://h/scim/v2/Groups/g1"}
    group = group_to_scim({"displayName": "Engineering", "externalId": "E"}, "g1", meta,
                          [{"value": "u1", "type": "User"}, {"value": "g2", "type": "Group"}])
    assert compile_filter('displayName eq "engineering"', "Group")(group)
    assert compile_filter('members[value eq "u1"]', "Group")(group)
    assert compile_filter('members.value eq "g2" and members[type eq "group"]', "Group")(group)
    assert not compile_filter('members eq "u9"', "Group")(group)
    with pytest.raises(ScimError):
        compile_filter('userName eq "x"', "Group")


# --- sorting -------------------------------------------------------------------------------------


def _sorted(attr: str, *, descending: bool = False, items: list[dict[str, Any]] | None = None) -> list[str]:
    return [u["id"] for u in sorted(items or USERS, key=sort_key(attr, "User", descending=descending))]


def test_sort_case_insensitive_and_missing_last() -> None:
    assert _sorted("userName") == ["u1", "u2", "u3"]
    assert _sorted("userName", descending=True) == ["u3", "u2", "u1"]
    assert _sorted("title") == ["u1", "u2", "u3"]  # only u1 has a title; ties by id
    assert _sorted("title", descending=True) == ["u1", "u2", "u3"]  # missing stay last
    assert _sorted("name.familyName") == ["u2", "u1", "u3"]
    assert _sorted("displayName", descending=True) == ["u3", "u2", "u1"]


def test_sort_by_multi_valued_uses_primary_then_first() -> None:
    assert _sorted("emails") == ["u1", "u2", "u3"]
    assert _sorted("emails.type") == ["u3", "u1", "u2"]  # home < work; u1's primary is work (tie by id)


def test_sort_by_dates_compares_instants() -> None:
    assert _sorted("meta.created") == ["u1", "u2", "u3"]
    assert _sorted("meta.lastModified", descending=True) == ["u3", "u2", "u1"]


def test_sort_is_stable_across_equal_values() -> None:
    clones = [_user(i, "2024-01-01T00:00:00Z", userName=f"same{i}", displayName="Same") for i in ("c", "a", "b")]
    assert _sorted("displayName", items=clones) == ["a", "b", "c"]


@pytest.mark.parametrize("attr", ["nosuch", "name", "emails[type eq \"work\"]", "password", ""])
def test_sort_by_unknown_attribute_is_refused(attr: str) -> None:
    with pytest.raises(ScimError) as info:
        sort_key(attr, "User")
    assert info.value.status == 400


# --- projection ----------------------------------------------------------------------------------


def test_attributes_keep_always_returned_ones() -> None:
    out = project(USERS[0], ["userName"], None, "User")
    assert set(out) == {"schemas", "id", "meta", "userName"}
    assert out["schemas"] == [USER_URN]  # the extension is not in the response


def test_attributes_with_sub_attributes_and_case() -> None:
    out = project(USERS[0], ["EMAILS.VALUE", "name.givenName"], None, "User")
    assert out["emails"] == [{"value": "alice@example.com"}, {"value": "alice@home.org"}]
    assert out["name"] == {"givenName": "Alice"}


def test_attributes_with_urn_qualified_names() -> None:
    out = project(USERS[0], [f"{ENTERPRISE_URN}:department", f"{USER_URN}:displayName"], None, "User")
    assert out[ENTERPRISE_URN] == {"department": "R&D"}
    assert out["displayName"] == "Alice"
    assert out["schemas"] == [USER_URN, ENTERPRISE_URN]
    out = project(USERS[0], [ENTERPRISE_URN], None, "User")
    assert out[ENTERPRISE_URN] == {"department": "R&D", "manager": {"value": "u3"}}


def test_attributes_with_value_filter_name_the_attribute() -> None:
    """Microsoft's suite asks for attributes=emails[type eq "work"]."""
    out = project(USERS[0], ['emails[type eq "work"]'], None, "User")
    assert "alice@example.com" in repr(out["emails"])


def test_excluded_attributes() -> None:
    meta = {"resourceType": "Group", "location": "https://h/scim/v2/Groups/g1"}
    group = group_to_scim({"displayName": "G"}, "g1", meta, [{"value": "u1", "type": "User"}])
    assert "members" not in project(group, None, ["members"], "Group")  # Entra's excludedAttributes=members
    assert project(group, None, ["members"], "Group")["displayName"] == "G"
    out = project(USERS[0], None, ["emails.type", "id", "meta", ENTERPRISE_URN, "groups"], "User")
    assert out["emails"] == [{"value": "alice@example.com", "primary": True}, {"value": "alice@home.org"}]
    assert "id" in out and "meta" in out  # returned: always
    assert ENTERPRISE_URN not in out and out["schemas"] == [USER_URN]
    assert "groups" not in out


def test_unknown_projection_names_are_ignored_and_password_never_returned() -> None:
    user = dict(USERS[1], password="leaked?")
    out = project(user, ["userName", "nosuch", "password"], None, "User")
    assert set(out) == {"schemas", "id", "meta", "userName"}
    assert "password" not in project(user, None, None, "User")


def test_no_projection_returns_everything() -> None:
    assert project(USERS[0], None, None, "User") == USERS[0]
    assert project(USERS[0], [], [], "User") == USERS[0]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("userName sw A", ["u1"]),
        ("meta.Created gt 2015-10-10T14:38:21.8617979-07:00", ["u1", "u2", "u3"]),
        ("name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)", ["u2"]),
        ('displayName eq "carol" or title eq Engineer', ["u1", "u3"]),
    ],
)
def test_unquoted_values_from_microsofts_suite(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize("expr", ["userName regex A", "userName eq A B", "userName eq A)", "active gt x"])
def test_unquoted_values_do_not_rescue_invalid_filters(expr: str) -> None:
    with pytest.raises(ScimError) as info:
        compile_filter(expr, "User")
    assert info.value.scim_type == "invalidFilter"
