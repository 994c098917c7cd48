"""What one authenticated client can make the endpoint do: every request that would cost unreasonable
work or outgrow what Kubernetes stores is refused with a SCIM error, and changes nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from scim_http import GROUP, USER, Scim, assert_error, backing, patch_body, user_body
from stored import list_objects, stored_user

from scim_common.settings import EndpointSettings
from scim_contract import claim_name
from scim_endpoint.app import create_app
from scim_endpoint.limits import Limits

LIMITS = Limits()


async def _user_count(scim: Scim) -> int:
    return len(await list_objects(scim.api, scim.namespace, "scimusers"))


@pytest.fixture
async def uncapped(scim: Scim, endpoint_api: client.ApiClient) -> AsyncIterator[Scim]:
    """A second app on the same namespace that leaves the object size to the API server."""
    async with backing(endpoint_api, scim.namespace) as (store, tokens):
        app = create_app(store, tokens, caps=Limits(max_object_bytes=100_000_000))
        async with TestServer(app) as server, TestClient(server) as http:
            yield Scim(http, scim.token, scim.api, scim.namespace)


# ---- CPU caps ------------------------------------------------------------------------------------
async def test_deeply_nested_json_is_a_syntax_error_not_a_server_error(scim: Scim) -> None:
    for raw in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        resp = await scim.call("POST", "/Users", raw=raw)
        assert_error(resp, 400, "invalidSyntax")
    # Nesting just past the limit, in an otherwise valid user, is refused too; nothing is stored.
    deep: object = "x"
    for _ in range(LIMITS.max_json_depth):
        deep = [deep]
    resp = await scim.post("/Users", user_body("deep@example.com", nickName=deep))
    assert_error(resp, 400, "invalidSyntax")
    assert await _user_count(scim) == 0


async def test_filter_length_and_term_count_are_capped(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("u0@example.com"))
    assert created.status == 201, created.text
    many = " or ".join(f'userName eq "u{i}@example.com"' for i in range(LIMITS.max_filter_terms + 1))
    assert len(many) <= LIMITS.max_filter_length  # refused for its terms, not its length
    for send in (scim.get(f"/Users?filter={many}"),
                 scim.post("/Users/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                              "filter": many})):
        assert_error(await send, 400, "invalidFilter")
    long = 'userName eq "' + "a" * LIMITS.max_filter_length + '"'
    assert_error(await scim.get(f"/Users?filter={long}"), 400, "invalidFilter")
    nested = "(" * 5000 + 'userName eq "x"' + ")" * 5000
    assert_error(await scim.post("/.search", {"filter": nested}), 400, "invalidFilter")
    # Nesting within the length limit is an ordinary filter (no recursion error, no 500).
    nested = "(" * 2000 + 'userName eq "x"' + ")" * 2000
    assert (await scim.post("/.search", {"filter": nested})).body["totalResults"] == 0
    # The largest allowed filter still works.
    allowed = " or ".join(f'userName eq "u{i}@example.com"' for i in range(LIMITS.max_filter_terms))
    found = await scim.post("/Users/.search", {"filter": allowed})
    assert found.status == 200, found.text
    assert found.body["totalResults"] == 1


async def test_attribute_lists_are_capped(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("a@example.com", displayName="A"))
    uid = created.body["id"]
    too_many = [f"name.givenName{i}" for i in range(LIMITS.max_attributes + 1)]
    resp = await scim.post("/Users/.search", {"attributes": too_many})
    assert_error(resp, 400, "tooMany")
    resp = await scim.post("/Users/.search", {"excludedAttributes": too_many})
    assert_error(resp, 400, "tooMany")
    assert_error(await scim.get(f"/Users/{uid}?attributes={','.join(too_many)}"), 400, "tooMany")
    allowed = ["displayName", *too_many[:LIMITS.max_attributes - 1]]
    resp = await scim.post("/Users/.search", {"attributes": allowed})
    assert resp.status == 200, resp.text
    assert resp.body["Resources"][0]["displayName"] == "A" and "userName" not in resp.body["Resources"][0]


async def test_patch_operation_count_is_capped(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("p@example.com", displayName="P"))
    uid = created.body["id"]
    ops = [{"op": "replace", "path": "displayName", "value": f"P{i}"} for i in range(LIMITS.max_patch_operations + 1)]
    assert_error(await scim.patch(f"/Users/{uid}", patch_body(*ops)), 400, "tooMany")
    stored = await stored_user(scim.api, scim.namespace, uid)
    assert stored is not None and stored["spec"]["displayName"] == "P"
    resp = await scim.patch(f"/Users/{uid}", patch_body(*ops[:LIMITS.max_patch_operations]))
    assert resp.status == 200, resp.text
    assert resp.body["displayName"] == f"P{LIMITS.max_patch_operations - 1}"


async def test_service_provider_config_advertises_the_limits(scim: Scim) -> None:
    resp = await scim.get("/ServiceProviderConfig")
    assert resp.status == 200
    assert resp.body["bulk"]["supported"] is False
    assert resp.body["filter"] == {"supported": True, "maxResults": 50}


# ---- object size ---------------------------------------------------------------------------------
def _big_values(prefix: str, count: int, length: int = 1000) -> list[dict[str, str]]:
    return [{"value": f"{prefix}{i}-" + "x" * length, "type": "other"} for i in range(count)]


async def test_a_body_too_large_to_store_is_invalid_value_naming_the_limit(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("big@example.com"))
    uid = created.body["id"]
    # Every multi-valued attribute near its item limit: under the request body limit, over what
    # Kubernetes stores in one object.
    attrs = {name: _big_values(name, 100, 1440) for name in ("emails", "phoneNumbers", "ims", "photos",
                                                         "entitlements", "roles", "x509Certificates")}
    body = user_body("big@example.com", **attrs)
    assert LIMITS.max_object_bytes < len(json.dumps(body)) < 1_048_576
    resp = await scim.put(f"/Users/{uid}", body)
    assert_error(resp, 400, "invalidValue")
    assert str(LIMITS.max_object_bytes) in resp.body["detail"]
    stored = await stored_user(scim.api, scim.namespace, uid)
    assert stored is not None and "emails" not in stored["spec"]
    resp = await scim.post("/Users", {**body, "userName": "big2@example.com"})
    assert_error(resp, 400, "invalidValue")
    assert await _user_count(scim) == 1


async def _grow_until_refused(scim: Scim, limit: str) -> None:
    """PATCH adds of large values until the endpoint refuses: a 400 invalidValue naming ``limit``,
    after which the user is unchanged and smaller changes still go through."""
    created = await scim.post("/Users", user_body("grow@example.com"))
    uid = created.body["id"]
    refused = None
    for name in ("emails", "phoneNumbers", "ims", "photos", "entitlements", "roles", "x509Certificates"):
        for chunk in range(4):
            resp = await scim.patch(f"/Users/{uid}", patch_body(
                {"op": "add", "path": name, "value": _big_values(f"{name}{chunk}-", 25, 4000)}))
            if resp.status != 200:
                refused = resp
                break
        if refused is not None:
            break
    assert refused is not None, "the object grew without limit"
    assert_error(refused, 400, "invalidValue")
    assert limit in refused.body["detail"]
    resp = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "displayName", "value": "G"}))
    assert resp.status == 200, resp.text


async def test_patches_growing_an_object_past_the_limit_are_refused(scim: Scim) -> None:
    await _grow_until_refused(scim, str(LIMITS.max_object_bytes))


async def test_the_api_servers_refusal_of_a_too_large_object_is_invalid_value(uncapped: Scim) -> None:
    """With the endpoint's own limit set beyond what etcd stores, etcd's refusal (a 500 from the API
    server) is the same 400, not a 503 the IdP would retry forever."""
    await _grow_until_refused(uncapped, "1.5 MiB")


# ---- Unicode-safe uniqueness ---------------------------------------------------------------------
COMPOSED, DECOMPOSED = "Jos\u00e9@example.com", "Jose\u0301@example.com"


async def test_composed_and_decomposed_user_names_are_one_name(scim: Scim) -> None:
    first = await scim.post("/Users", user_body(COMPOSED))
    assert first.status == 201, first.text
    assert_error(await scim.post("/Users", user_body(DECOMPOSED)), 409, "uniqueness")
    for form in (DECOMPOSED, DECOMPOSED.upper(), COMPOSED.lower()):
        for filter_ in (f'userName eq "{form}"', f'userName sw "{form[:5]}"', f'userName co "{form[2:5]}"'):
            found = await scim.post("/Users/.search", {"filter": filter_})
            assert found.status == 200, found.text
            assert [r["id"] for r in found.body.get("Resources", [])] == [first.body["id"]], filter_


async def test_case_folding_classics(scim: Scim) -> None:
    strasse = await scim.post("/Users", user_body("stra\u00dfe"))
    assert strasse.status == 201
    for other in ("STRASSE", "strasse", "Stra\u1e9ee"):
        assert_error(await scim.post("/Users", user_body(other)), 409, "uniqueness")
    found = await scim.post("/Users/.search", {"filter": 'userName eq "STRASSE"'})
    assert found.body["totalResults"] == 1
    dotted = await scim.post("/Users", user_body("\u0130stanbul"))
    assert dotted.status == 201
    # U+0130 folds to "i" + combining dot above, whichever way that is typed.
    assert_error(await scim.post("/Users", user_body("i\u0307stanbul")), 409, "uniqueness")
    # A plain "i" is another letter.
    assert (await scim.post("/Users", user_body("istanbul"))).status == 201
    group = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Caf\u00e9"})
    assert group.status == 201
    assert_error(await scim.post("/Groups", {"schemas": [GROUP], "displayName": "CAFE\u0301"}), 409, "uniqueness")
    found = await scim.get('/Groups?filter=displayName eq "cafe\u0301"')
    assert found.body["totalResults"] == 1


async def test_renaming_to_another_form_of_a_taken_name_conflicts(scim: Scim) -> None:
    await scim.post("/Users", user_body(COMPOSED))
    other = await scim.post("/Users", user_body("other@example.com"))
    resp = await scim.patch(f"/Users/{other.body['id']}",
                            patch_body({"op": "replace", "path": "userName", "value": DECOMPOSED}))
    assert_error(resp, 409, "uniqueness")
    assert USER in other.body["schemas"]


def test_claim_names_of_existing_values_do_not_change() -> None:
    """Claims are stored objects: a value typed in NFC (every ASCII one) keeps the claim name it had
    when names were only case-folded, so no claim needs migrating."""
    for value in ("Ann@Example.com", "caf\u00e9", "stra\u00dfe", "\u0130stanbul"):
        before = "user-" + hashlib.sha256(value.casefold().encode()).hexdigest()[:40]
        assert claim_name("User", value) == before
    assert claim_name("User", DECOMPOSED) == claim_name("User", COMPOSED)


def test_the_flags_default_to_the_limits_defaults() -> None:
    settings = EndpointSettings()
    for name in ("max_filter_length", "max_filter_terms", "max_attributes", "max_patch_operations",
                 "max_json_depth", "max_object_bytes"):
        assert getattr(settings, name) == getattr(LIMITS, name), name
