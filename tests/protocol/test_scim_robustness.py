"""Whatever a client sends, the protocol layer answers with a result or a ScimError 400, never another
exception (which the server would turn into a 500). Random but seeded, so a failure reproduces."""

from __future__ import annotations

import random
from typing import Any

import pytest
from typed_requests import group_from_request, user_from_request

from scim_endpoint.convert import group_to_scim, user_to_scim, user_to_spec
from scim_endpoint.errors import ScimError
from scim_endpoint.filters import compile_filter, project, sort_key
from scim_endpoint.patch import apply_patch
from scim_endpoint.schema import ENTERPRISE_URN, PATCH_URN, USER_URN

NAMES = ["userName", "USERNAME", "name", "name.givenName", "emails", "emails.value", 'emails[type eq "work"]',
         'emails[type eq "work"].value', "active", "members", 'members[value eq "u1"]', "groups", "id", "meta",
         "schemas", "password", "externalId", "displayName", ENTERPRISE_URN, f"{ENTERPRISE_URN}:manager",
         f"{ENTERPRISE_URN}:manager.value", "addresses", "x509Certificates", "nosuch", "", "[", "a.b.c",
         "emails[", 'members[value eq "u1"].display', "meta.created", "urn:x:y", "$ref", "value", "type"]
SCALARS: list[Any] = [None, True, False, 0, -1, 3.5, "", "x", "True", "false", "2024-01-01T00:00:00Z", "Group",
                      "user", "u1", "a" * 5000]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.5:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(NAMES): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [USER_URN], "userName": "a", "displayName": "G"}
    for _ in range(rng.randint(1, 6)):
        body[rng.choice(NAMES)] = _value(rng)
    return body


def _user() -> dict[str, Any]:
    spec = user_to_spec(user_from_request({"userName": "a", "emails": [{"value": "a@x", "type": "work"}]}))
    return user_to_scim(spec, "u1", {"resourceType": "User"})


def _group() -> dict[str, Any]:
    return group_to_scim({"displayName": "G"}, "g1", {"resourceType": "Group"}, [{"value": "u1", "type": "User"}])


def _only_scim_errors(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except ScimError as exc:
        assert exc.status == 400 and exc.scim_type


@pytest.mark.parametrize("seed", range(300))
def test_random_bodies_and_patches(seed: int) -> None:
    rng = random.Random(seed)
    _only_scim_errors(user_from_request, _body(rng))
    _only_scim_errors(group_from_request, _body(rng))
    operations = [{rng.choice(["op", "OP", "path", "value"]): _value(rng) for _ in range(rng.randint(0, 3))}
                  for _ in range(rng.randint(1, 3))]
    for operation in operations:
        if rng.random() < 0.8:
            operation["op"] = rng.choice(["add", "Replace", "remove", "copy"])
        if rng.random() < 0.7:
            operation["path"] = rng.choice(NAMES)
    body = {"schemas": [PATCH_URN], "Operations": operations}
    _only_scim_errors(apply_patch, _user(), body, "User")
    _only_scim_errors(apply_patch, _group(), body, "Group")


ATOMS = ["userName", "emails.value", "emails", "active", "meta.created", "name", "members", "id", "title",
         f"{ENTERPRISE_URN}:department", "x509Certificates.value", "emails[type eq \"work\"]", "nosuch"]
OPS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "regex"]
LITERALS = ['"x"', "true", "false", "null", "1", "-2.5", '"2024-01-01T00:00:00Z"', "bare", '"', ""]


@pytest.mark.parametrize("seed", range(300))
def test_random_filters_sorts_and_projections(seed: int) -> None:
    rng = random.Random(seed)

    def expr(depth: int = 0) -> str:
        roll = rng.random()
        if depth < 2 and roll < 0.2:
            return f"{expr(depth + 1)} {rng.choice(['and', 'or', 'AND'])} {expr(depth + 1)}"
        if depth < 2 and roll < 0.3:
            return f"not ({expr(depth + 1)})"
        if depth < 2 and roll < 0.35:
            return f"emails[{expr(depth + 1)}]"
        op = rng.choice(OPS)
        return f"{rng.choice(ATOMS)} {op}" + ("" if op == "pr" else f" {rng.choice(LITERALS)}")

    text = expr()
    for resource_type, resource in (("User", _user()), ("Group", _group())):
        try:
            predicate = compile_filter(text, resource_type)
        except ScimError as exc:
            assert exc.scim_type == "invalidFilter"
        else:
            assert predicate(resource) in (True, False)
        _only_scim_errors(sort_key, rng.choice(ATOMS), resource_type)
        project(resource, rng.sample(NAMES, 3), rng.sample(NAMES, 2), resource_type)
        project(resource, None, rng.sample(NAMES, 3), resource_type)
