"""Two real ``litellm-scim endpoint`` processes on one namespace: what a load-balanced IdP sees."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from kubernetes_asyncio import client
from operator_helpers import EndpointProcess
from scim_http import GROUP, Scim, assert_error, patch_body, user_body, write_tokens
from stored import list_objects, stored_members

pytestmark = pytest.mark.slow


@pytest.fixture
async def replicas(endpoints: list[EndpointProcess], token: str, kube_api: client.ApiClient,
                   namespace: str) -> AsyncIterator[list[Scim]]:
    async with aiohttp.ClientSession() as http:
        yield [Scim(http, token, kube_api, namespace, base=ep.url) for ep in endpoints]


async def test_racing_posts_of_one_user_name_create_exactly_one(replicas: list[Scim]) -> None:
    a, b = replicas
    for i in range(20):
        name = f"racer{i}@example.com"
        first, second = await asyncio.gather(a.post("/Users", user_body(name)),
                                             b.post("/Users", user_body(name.upper())))
        assert sorted([first.status, second.status]) == [201, 409], (first.text, second.text)
        loser = first if first.status == 409 else second
        assert_error(loser, 409, "uniqueness")
    users = await list_objects(a.api, a.namespace, "scimusers")
    assert len(users) == 20
    claims = await list_objects(a.api, a.namespace, "scimnameclaims")
    assert {c["spec"]["owner"] for c in claims} == {u["metadata"]["name"] for u in users}


async def test_racing_group_creates_and_renames(replicas: list[Scim]) -> None:
    a, b = replicas
    results = await asyncio.gather(*(s.post("/Groups", {"schemas": [GROUP], "displayName": "Same"})
                                     for s in (a, b, a, b)))
    assert sorted(r.status for r in results) == [201, 409, 409, 409]


async def test_a_write_through_one_replica_reads_back_through_the_other(replicas: list[Scim]) -> None:
    a, b = replicas
    for i in range(10):
        created = await a.post("/Users", user_body(f"ryw{i}@example.com", title="first"))
        uid = created.body["id"]
        got = await b.get(f"/Users/{uid}")
        assert got.status == 200 and got.body["title"] == "first"
        found = await b.get(f"/Users?filter=userName%20eq%20%22ryw{i}%40example.com%22")
        assert [r["id"] for r in found.body["Resources"]] == [uid]
        changed = await a.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "title", "value": "second"}))
        assert changed.status == 200
        again = await b.get(f"/Users/{uid}")
        assert again.body["title"] == "second" and again.headers["ETag"] == changed.headers["ETag"]
    gid = (await b.post("/Groups", {"schemas": [GROUP], "displayName": "Cross"})).body["id"]
    # Entra: group created through one replica, filled through the other, read through the first.
    added = await a.patch(f"/Groups/{gid}", patch_body({"op": "Add", "path": "members",
                                                        "value": [{"value": "member-1"}]}))
    assert added.status == 204
    assert {m["value"] for m in (await b.get(f"/Groups/{gid}")).body["members"]} == {"member-1"}
    added = await b.patch(f"/Groups/{gid}", patch_body({"op": "Add", "path": "members",
                                                        "value": [{"value": "member-2"}]}))
    assert added.status == 204
    assert await stored_members(a.api, a.namespace, gid) == {"member-1", "member-2"}
    assert {m["value"] for m in (await a.get(f"/Groups/{gid}")).body["members"]} == {"member-1", "member-2"}


async def test_tokens_rotate_and_revoke_without_restart(replicas: list[Scim], kube_api: client.ApiClient,
                                                        namespace: str, token: str) -> None:
    a, b = replicas
    fresh = secrets.token_urlsafe(24)
    await write_tokens(kube_api, namespace, {"ci": token, "rotated": fresh})
    for scim in (a, b):
        assert await _eventually_status(scim, fresh, 200)
        assert (await scim.get("/Users")).status == 200
    await write_tokens(kube_api, namespace, {"rotated": fresh})
    for scim in (a, b):
        assert await _eventually_status(scim, token, 401)
        assert_error(await scim.get("/Users"), 401)
        assert (await scim.get("/Users", token=fresh)).status == 200
    await client.CoreV1Api(kube_api).delete_namespaced_secret("litellm-scim-tokens", namespace)
    for scim in (a, b):
        assert await _eventually_status(scim, fresh, 401)


async def _eventually_status(scim: Scim, token: str, status: int) -> bool:
    """The Secret reaches each replica through its watch: allow it a few seconds."""
    for _ in range(100):
        if (await scim.get("/ServiceProviderConfig", token=token)).status == status:
            return True
        await asyncio.sleep(0.05)
    return False
