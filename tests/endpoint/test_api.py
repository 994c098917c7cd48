"""The SCIM API over HTTP against the real API server: responses AND the custom resources they leave."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from scim_http import ENTERPRISE, GROUP, SCIM, USER, Scim, assert_error, patch_body, user_body
from stored import get_object, stored_claims, stored_group, stored_members, stored_shards, stored_user

from scim_contract import FINALIZER, SHARDS, claim_name, shard_name, shard_of
from scim_contract import USER as USER_KIND


async def test_user_lifecycle_is_stored_as_a_scim_user(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("ann@example.com", displayName="Ann", name={"givenName": "Ann"},
                                                  emails=[{"value": "ann@example.com", "type": "work",
                                                           "primary": True}]))
    assert created.status == 201, created.text
    uid = created.body["id"]
    assert created.headers["Location"].endswith(f"/scim/v2/Users/{uid}")
    assert created.headers["ETag"] == created.body["meta"]["version"] == 'W/"1"'
    assert created.headers["Content-Type"] == SCIM
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None
    assert obj["spec"]["userName"] == "ann@example.com"
    assert obj["spec"]["name"] == {"givenName": "Ann"}
    assert obj["spec"]["emails"] == [{"value": "ann@example.com", "type": "work", "primary": True}]
    assert created.body["meta"]["created"] == obj["metadata"]["creationTimestamp"]

    got = await scim.get(f"/Users/{uid}")
    assert got.status == 200 and got.body["displayName"] == "Ann"

    replaced = await scim.put(f"/Users/{uid}", user_body("ann@example.com", displayName="Ann B", active=False))
    assert replaced.status == 200, replaced.text
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["displayName"] == "Ann B" and obj["spec"]["active"] is False
    assert "emails" not in obj["spec"]
    assert replaced.body["meta"]["version"] == f'W/"{obj["metadata"]["generation"]}"' != created.body["meta"]["version"]

    patched = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "title", "value": "CTO"}))
    assert patched.status == 200 and patched.body["title"] == "CTO"
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and obj["spec"]["title"] == "CTO"

    deleted = await scim.delete(f"/Users/{uid}")
    assert deleted.status == 204
    assert await stored_user(scim.api, scim.namespace, uid) is None
    assert await stored_claims(scim.api, scim.namespace) == []
    assert_error(await scim.get(f"/Users/{uid}"), 404)


async def test_group_lifecycle_stores_members_in_shards(scim: Scim) -> None:
    users = [(await scim.post("/Users", user_body(f"m{i}@example.com"))).body["id"] for i in range(3)]
    created = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Eng",
                                          "members": [{"value": u} for u in users[:2]]})
    assert created.status == 201, created.text
    gid = created.body["id"]
    assert {m["value"] for m in created.body["members"]} == set(users[:2])
    group = await stored_group(scim.api, scim.namespace, gid)
    assert group is not None and group["spec"] == {"displayName": "Eng"}
    assert await stored_members(scim.api, scim.namespace, gid) == set(users[:2])
    for shard in await stored_shards(scim.api, scim.namespace, gid):
        assert shard["metadata"]["ownerReferences"][0]["uid"] == group["metadata"]["uid"]
        assert shard["metadata"]["name"] == shard_name(gid, shard["spec"]["shard"])

    member = await scim.get(f"/Users/{users[0]}")
    assert member.body["groups"] == [{"value": gid, "display": "Eng", "type": "direct"}]

    replaced = await scim.put(f"/Groups/{gid}", {"schemas": [GROUP], "displayName": "Engineering",
                                                 "members": [{"value": users[2]}]})
    assert replaced.status == 200, replaced.text
    assert await stored_members(scim.api, scim.namespace, gid) == {users[2]}
    group = await stored_group(scim.api, scim.namespace, gid)
    assert group is not None and group["spec"]["displayName"] == "Engineering"
    assert {c["metadata"]["name"] for c in await stored_claims(scim.api, scim.namespace)
            if c["spec"]["resourceKind"] == "Group"} == {claim_name("Group", "Engineering")}

    assert (await scim.delete(f"/Groups/{gid}")).status == 204
    assert await stored_group(scim.api, scim.namespace, gid) is None
    assert await stored_shards(scim.api, scim.namespace, gid) == []
    assert "groups" not in (await scim.get(f"/Users/{users[2]}")).body


async def test_duplicate_names_are_409_uniqueness(scim: Scim) -> None:
    assert (await scim.post("/Users", user_body("dup@example.com"))).status == 201
    assert_error(await scim.post("/Users", user_body("DUP@example.com")), 409, "uniqueness")
    assert (await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Ops"})).status == 201
    assert_error(await scim.post("/Groups", {"schemas": [GROUP], "displayName": "ops"}), 409, "uniqueness")
    other = await scim.post("/Users", user_body("other@example.com"))
    assert_error(await scim.put(f"/Users/{other.body['id']}", user_body("dup@example.com")), 409, "uniqueness")
    obj = await stored_user(scim.api, scim.namespace, other.body["id"])
    assert obj is not None and obj["spec"]["userName"] == "other@example.com"


async def test_authentication(scim: Scim) -> None:
    assert_error(await scim.get("/Users", token=""), 401)
    assert_error(await scim.get("/Users", token="not-the-token"), 401)
    assert_error(await scim.call("GET", "/Users", headers={"Authorization": f"Basic {scim.token}"}), 401)
    assert (await scim.get("/Users")).status == 200
    # Probes are open; everything under /scim/v2 is not.
    async with scim.http.get("/healthz") as resp:
        assert resp.status == 200
    async with scim.http.get("/readyz") as resp:
        assert resp.status == 200
    assert_error(await scim.get("/ServiceProviderConfig", token="nope"), 401)


async def test_bad_requests_are_scim_errors_and_write_nothing(scim: Scim) -> None:
    assert_error(await scim.call("POST", "/Users", raw=b'{"userName": '), 400, "invalidSyntax")
    assert_error(await scim.call("POST", "/Users", raw=b""), 400, "invalidSyntax")
    big = json.dumps(user_body("big@example.com", displayName="x" * 1_100_000)).encode()
    assert_error(await scim.call("POST", "/Users", raw=big), 413)
    assert_error(await scim.post("/Users", {"schemas": [USER], "userName": 42}), 400)
    assert_error(await scim.post("/Users", {"schemas": [USER]}), 400)
    assert_error(await scim.get("/Nothing"), 404)
    assert_error(await scim.call("DELETE", "/Users"), 405)
    assert_error(await scim.get("/Users?filter=userName%20zz%20%22x%22"), 400, "invalidFilter")
    assert_error(await scim.get("/Users?startIndex=abc"), 400)
    listed = await scim.get("/Users")
    assert listed.body["totalResults"] == 0
    assert await stored_claims(scim.api, scim.namespace) == []


async def test_application_json_is_accepted(scim: Scim) -> None:
    resp = await scim.post("/Users", user_body("json@example.com"), content_type="application/json")
    assert resp.status == 201 and resp.headers["Content-Type"] == SCIM


async def test_etags(scim: Scim) -> None:
    created = await scim.post("/Users", user_body("etag@example.com"))
    uid, etag = created.body["id"], created.headers["ETag"]
    unchanged = await scim.get(f"/Users/{uid}", headers={"If-None-Match": etag})
    assert unchanged.status == 304
    assert (await scim.get(f"/Users/{uid}", headers={"If-None-Match": 'W/"999"'})).status == 200
    stale = {"If-Match": 'W/"999"'}
    assert_error(await scim.put(f"/Users/{uid}", user_body("etag@example.com", title="x"), headers=stale), 412)
    assert_error(await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "title", "value": "x"}),
                                  headers=stale), 412)
    assert_error(await scim.delete(f"/Users/{uid}", headers=stale), 412)
    obj = await stored_user(scim.api, scim.namespace, uid)
    assert obj is not None and "title" not in obj["spec"]
    ok = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "title", "value": "y"}),
                          headers={"If-Match": etag})
    assert ok.status == 200 and ok.headers["ETag"] != etag
    assert (await scim.delete(f"/Users/{uid}", headers={"If-Match": ok.headers["ETag"]})).status == 204

    group = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Versioned"})
    gid, gtag = group.body["id"], group.headers["ETag"]
    added = await scim.patch(f"/Groups/{gid}", patch_body({"op": "add", "path": "members",
                                                           "value": [{"value": "someone"}]}))
    assert added.status == 204
    # A member change is a change of the group: its version moves although the ScimGroup did not.
    assert added.headers["ETag"] != gtag
    assert (await scim.get(f"/Groups/{gid}")).headers["ETag"] == added.headers["ETag"]
    assert_error(await scim.delete(f"/Groups/{gid}", headers={"If-Match": gtag}), 412)


async def test_paging_is_stable_and_counted(scim: Scim) -> None:
    ids = [(await scim.post("/Users", user_body(f"page{i}@example.com"))).body["id"] for i in range(7)]
    seen: list[str] = []
    for start in (1, 4, 7):
        page = await scim.get(f"/Users?startIndex={start}&count=3")
        assert page.body["totalResults"] == 7 and page.body["startIndex"] == start
        assert isinstance(page.body["itemsPerPage"], int)
        seen += [r["id"] for r in page.body["Resources"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    again = [r["id"] for r in (await scim.get("/Users?count=7")).body["Resources"]]
    assert again == seen
    only_total = await scim.get("/Users?count=0")
    assert only_total.body["totalResults"] == 7 and "Resources" not in only_total.body
    assert (await scim.get("/Users?startIndex=0&count=2")).body["startIndex"] == 1
    capped = await scim.get("/Users?count=100000")
    assert capped.body["itemsPerPage"] == 7
    ordered = await scim.get("/Users?sortBy=userName&sortOrder=descending")
    assert [r["userName"] for r in ordered.body["Resources"]] == [f"page{i}@example.com" for i in range(6, -1, -1)]
    projected = await scim.get("/Users?attributes=userName&count=1")
    assert set(projected.body["Resources"][0]) == {"schemas", "id", "userName", "meta"}
    searched = await scim.post("/Users/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                                  "filter": 'userName sw "page1"', "count": 5})
    assert searched.status == 200 and searched.body["totalResults"] == 1


async def test_paging_follows_deletes_and_creates(scim: Scim) -> None:
    """Pages are slices of a kept order (creation time, then id): a deleted user leaves it, a new one
    takes its place by creation time."""
    ids = [(await scim.post("/Users", user_body(f"order{i}@example.com"))).body["id"] for i in range(6)]
    assert (await scim.delete(f"/Users/{ids[2]}")).status == 204
    newcomer = (await scim.post("/Users", user_body("order-new@example.com"))).body["id"]
    seen: list[str] = []
    created: dict[str, str] = {}
    for start in (1, 3, 5):
        page = await scim.get(f"/Users?startIndex={start}&count=2")
        assert page.body["totalResults"] == 6 and page.body["itemsPerPage"] == 2
        seen += [r["id"] for r in page.body["Resources"]]
        created.update({r["id"]: r["meta"]["created"] for r in page.body["Resources"]})
    assert sorted(seen) == sorted([*ids[:2], *ids[3:], newcomer])
    assert seen == sorted(seen, key=lambda i: (created[i], i))
    assert (await scim.get("/Users?startIndex=7&count=2")).body["itemsPerPage"] == 0


async def test_groups_holding_a_member(scim: Scim) -> None:
    """``members[value eq]`` finds the groups holding a member, as a full scan would, in any case."""
    u1, u2 = [(await scim.post("/Users", user_body(f"held{i}@example.com"))).body["id"] for i in range(2)]

    async def group(name: str, members: list[str]) -> str:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
        created = await scim.post("/Groups", body)
        assert created.status == 201
        return str(created.body["id"])

    a, b = await group("held-a", [u1]), await group("held-b", [u1, u2])
    odd = await group("held-odd", ["Mixed-Case-Member"])
    await group("held-none", [])

    async def holding(expr: str) -> set[str]:
        found = await scim.get("/Groups?" + urlencode({"filter": expr, "excludedAttributes": "members"}))
        assert found.status == 200
        return {r["id"] for r in found.body.get("Resources", [])}

    async def scanned(value: str) -> set[str]:
        # The same question in a form no index answers: every group is tested.
        return await holding(f'members[value eq "{value}"] or displayName eq "no such group"')

    assert await holding(f'members[value eq "{u1}"]') == {a, b} == await scanned(u1)
    assert await holding(f'members.value eq "{u2}"') == {b} == await scanned(u2)
    for value in ("mixed-case-member", "MIXED-CASE-MEMBER", "Mixed-Case-Member"):
        assert await holding(f'members[value eq "{value}"]') == await scanned(value)
    assert odd in await scanned("Mixed-Case-Member")
    removed = await scim.patch(f"/Groups/{a}", patch_body({"op": "remove", "path": f'members[value eq "{u1}"]'}))
    assert removed.status == 204
    assert await holding(f'members[value eq "{u1}"]') == {b} == await scanned(u1)
    assert await holding('members[value eq "nobody"]') == set()


async def test_max_results_caps_pages(scim: Scim) -> None:
    for i in range(55):
        assert (await scim.post("/Users", user_body(f"cap{i}@example.com"))).status == 201
    page = await scim.get("/Users?count=100")
    assert page.body["totalResults"] == 55 and page.body["itemsPerPage"] == 50
    config = await scim.get("/ServiceProviderConfig")
    assert config.body["filter"]["maxResults"] == 50


async def test_discovery(scim: Scim) -> None:
    config = await scim.get("/ServiceProviderConfig")
    assert config.status == 200 and config.body["patch"]["supported"] is True
    types = await scim.get("/ResourceTypes")
    assert {r["name"] for r in types.body["Resources"]} == {"User", "Group"}
    assert (await scim.get("/ResourceTypes/User")).status == 200
    schemas = await scim.get("/Schemas")
    assert {s["id"] for s in schemas.body["Resources"]} >= {USER, GROUP, ENTERPRISE}
    assert (await scim.get(f"/Schemas/{USER}")).body["id"] == USER
    assert_error(await scim.get("/Schemas/urn:nope"), 404)


async def test_root_search_spans_users_and_groups(scim: Scim) -> None:
    await scim.post("/Users", user_body("root@example.com", displayName="Shared"))
    await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Shared"})
    found = await scim.post("/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                         "filter": 'displayName eq "Shared"'})
    assert found.status == 200 and found.body["totalResults"] == 2


@pytest.mark.slow
async def test_fifty_thousand_member_group_over_http(scim: Scim) -> None:
    gid = (await scim.post("/Groups", {"schemas": [GROUP], "displayName": "All"})).body["id"]
    for batch in range(5):
        members = [{"value": f"user-{batch}-{i:05d}"} for i in range(10_000)]
        resp = await scim.patch(f"/Groups/{gid}", patch_body({"op": "add", "path": "members", "value": members}))
        assert resp.status == 204, resp.text
    shards = await stored_shards(scim.api, scim.namespace, gid)
    assert len(shards) <= SHARDS
    assert sum(len(s["spec"]["users"]) for s in shards) == 50_000
    assert max(len(json.dumps(s).encode()) for s in shards) < 1024 * 1024 // 2
    before = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in shards}
    resp = await scim.patch(f"/Groups/{gid}", patch_body({"op": "add", "path": "members",
                                                          "value": [{"value": "late-joiner"}]}))
    assert resp.status == 204
    after = {s["metadata"]["name"]: s["metadata"]["resourceVersion"]
             for s in await stored_shards(scim.api, scim.namespace, gid)}
    assert {n for n in after if after[n] != before.get(n)} == {shard_name(gid, shard_of("late-joiner"))}
    listed = await scim.get('/Groups?filter=displayName%20eq%20%22All%22&excludedAttributes=members')
    assert listed.body["totalResults"] == 1 and "members" not in listed.body["Resources"][0]


async def test_metrics_count_requests_by_route(kube_api: Any, endpoint_api: Any, namespace: str,
                                               token: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from scim_http import TOKEN_SECRET

    from scim_endpoint.app import create_app
    from scim_endpoint.auth import Tokens
    from scim_endpoint.metrics import Metrics
    from scim_endpoint.store import Store

    store, tokens = Store(endpoint_api, namespace), Tokens(endpoint_api, namespace, TOKEN_SECRET)
    store.start()
    tokens.start()
    await store.wait_ready()
    await tokens.informer.synced.wait()
    metrics = Metrics(store)
    app = create_app(store, tokens, metrics=metrics)
    try:
        async with TestServer(app) as server, TestClient(server) as http:
            scim = Scim(http, token, kube_api, namespace)
            await scim.post("/Users", user_body("metered@example.com"))
            await scim.get("/users?count=1")
            await scim.get("/Nope")
        async with TestServer(metrics.app()) as server, TestClient(server) as http:
            text = await (await http.get("/metrics")).text()
    finally:
        await tokens.stop()
        await store.stop()
    assert 'scim_requests_total{method="POST",route="/scim/v2/Users",status="201"} 1.0' in text
    assert 'scim_requests_total{method="GET",route="/scim/v2/Users",status="200"} 1.0' in text
    assert 'status="404"' in text
    assert 'scim_cached_objects{kind="scimusers"} 1.0' in text
    assert token not in text


async def test_api_server_failures_are_503_scim_errors(endpoint_kubeconfig: str, namespace: str,
                                                       token: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from scim_http import TOKEN_SECRET

    from scim_common import kube
    from scim_endpoint.app import create_app
    from scim_endpoint.auth import Tokens
    from scim_endpoint.store import Store

    api = await kube.api_client(endpoint_kubeconfig)
    async with api:
        store, tokens = Store(api, namespace), Tokens(api, namespace, TOKEN_SECRET)
        store.start()
        tokens.start()
        await store.wait_ready()
        await tokens.informer.synced.wait()
        # The API server goes away after the caches synced.
        api.configuration.host = "https://127.0.0.1:9"
        try:
            async with TestServer(create_app(store, tokens)) as server, TestClient(server) as http:
                scim = Scim(http, token, api, namespace)
                assert_error(await scim.post("/Users", user_body("down@example.com")), 503)
                assert_error(await scim.get("/Users"), 503)
        finally:
            await tokens.stop()
            await store.stop()


async def test_a_user_held_by_a_finalizer_is_gone_for_scim_clients(scim: Scim) -> None:
    """The operator keeps a deleted ScimUser until LiteLLM access is removed (the endpoint creates it
    with the operator's finalizer; no operator runs here); SCIM must not show it."""
    uid = (await scim.post("/Users", user_body("fin@example.com"))).body["id"]
    assert (await scim.delete(f"/Users/{uid}")).status == 204
    held = await get_object(scim.api, scim.namespace, USER_KIND.plural, uid)
    assert held is not None and held["metadata"].get("deletionTimestamp")
    assert held["metadata"]["finalizers"] == [FINALIZER]
    assert_error(await scim.get(f"/Users/{uid}"), 404)
    listed = await scim.get('/Users?filter=userName eq "fin@example.com"')
    assert listed.status == 200 and listed.body["totalResults"] == 0
    again = await scim.post("/Users", user_body("fin@example.com"))
    assert again.status == 201, again.text
    assert again.body["id"] != uid
