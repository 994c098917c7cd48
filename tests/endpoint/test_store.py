"""The Kubernetes storage of the endpoint against the real API server: what lands in the custom
resources, uniqueness under races, member shards, and reads across two independent caches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client
from stored import get_object, stored_claims, stored_group, stored_members, stored_shards, stored_user

from scim_common import kube
from scim_contract import (
    API_GROUP,
    API_VERSION,
    CLAIM,
    FINALIZER,
    SHARDS,
    USER,
    VERSION,
    claim_name,
    shard_name,
    shard_of,
)
from scim_endpoint.errors import ScimError
from scim_endpoint.store import ANNOTATION_CLAIMED_AT, GROUPS, USERS, Store


@pytest.fixture
async def store(endpoint_api: client.ApiClient, namespace: str) -> AsyncIterator[Store]:
    s = Store(endpoint_api, namespace)
    s.start()
    await asyncio.wait_for(s.wait_ready(), 30)
    yield s
    await s.stop()


@pytest.fixture
async def other_store(endpoint_kubeconfig: str, namespace: str) -> AsyncIterator[Store]:
    """A second replica's storage: its own API connection and its own caches."""
    api = await kube.api_client(endpoint_kubeconfig)
    async with api:
        s = Store(api, namespace)
        s.start()
        await asyncio.wait_for(s.wait_ready(), 30)
        yield s
        await s.stop()


async def test_create_user_stores_spec_and_claims_the_name(store: Store, kube_api: client.ApiClient,
                                                          namespace: str) -> None:
    rec = await store.create(USERS, {"userName": "Alice@Example.com", "active": True, "displayName": "Alice"})
    obj = await stored_user(kube_api, namespace, rec.id)
    assert obj is not None
    assert obj["spec"]["userName"] == "Alice@Example.com"
    assert obj["spec"]["displayName"] == "Alice"
    assert rec.meta["version"] == f'W/"{obj["metadata"]["generation"]}"'
    claims = await stored_claims(kube_api, namespace)
    assert [(c["metadata"]["name"], c["spec"]["owner"]) for c in claims] == [
        (claim_name("User", "alice@example.com"), rec.id)]


async def test_duplicate_user_name_in_other_case_is_refused_and_writes_nothing(
        store: Store, kube_api: client.ApiClient, namespace: str) -> None:
    await store.create(USERS, {"userName": "bob@example.com"})
    with pytest.raises(ScimError) as err:
        await store.create(USERS, {"userName": "BOB@EXAMPLE.COM"})
    assert err.value.status == 409 and err.value.scim_type == "uniqueness"
    users = await client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        API_GROUP, VERSION, namespace, "scimusers")
    assert [u["spec"]["userName"] for u in users["items"]] == ["bob@example.com"]


async def test_two_replicas_racing_on_one_user_name_create_exactly_one(store: Store, other_store: Store,
                                                                       kube_api: client.ApiClient,
                                                                       namespace: str) -> None:
    for i in range(20):
        name = f"race{i}@example.com"
        results = await asyncio.gather(store.create(USERS, {"userName": name}),
                                       other_store.create(USERS, {"userName": name.upper()}),
                                       return_exceptions=True)
        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ScimError) and r.status == 409]
        assert len(created) == 1 and len(refused) == 1, results
    users = await client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        API_GROUP, VERSION, namespace, "scimusers")
    assert len(users["items"]) == 20


async def test_a_write_through_one_replica_is_read_back_through_another(store: Store, other_store: Store) -> None:
    rec = await store.create(USERS, {"userName": "carol@example.com", "title": "Engineer"})
    await other_store.fresh(other_store.users)
    seen = other_store.get(USERS, rec.id)
    assert seen is not None and seen.spec["title"] == "Engineer"
    rec = await store.update(USERS, rec, {**rec.spec, "title": "Manager"})
    await other_store.fresh(other_store.users)
    seen = other_store.get(USERS, rec.id)
    assert seen is not None and seen.spec["title"] == "Manager"
    assert seen.meta["version"] == rec.meta["version"]


async def test_rename_moves_the_claim(store: Store, kube_api: client.ApiClient, namespace: str) -> None:
    rec = await store.create(USERS, {"userName": "dave@example.com"})
    await store.update(USERS, rec, {**rec.spec, "userName": "david@example.com"})
    claims = {c["metadata"]["name"]: c["spec"] for c in await stored_claims(kube_api, namespace)}
    assert set(claims) == {claim_name("User", "david@example.com")}
    # The old name is free again.
    await store.create(USERS, {"userName": "dave@example.com"})


async def test_a_stale_claim_is_taken_over(store: Store, kube_api: client.ApiClient, namespace: str) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        API_GROUP, VERSION, namespace, CLAIM.plural, {
            "apiVersion": API_VERSION, "kind": CLAIM.kind,
            "metadata": {"name": claim_name("User", "erin@example.com"), "annotations": {ANNOTATION_CLAIMED_AT: old}},
            "spec": {"resourceKind": "User", "value": "erin@example.com", "owner": "gone-user"}})
    rec = await store.create(USERS, {"userName": "erin@example.com"})
    claims = await stored_claims(kube_api, namespace)
    assert [c["spec"]["owner"] for c in claims] == [rec.id]


async def test_a_fresh_claim_of_a_missing_owner_is_not_taken(store: Store, kube_api: client.ApiClient,
                                                             namespace: str) -> None:
    # An owner missing for a moment may be a create still in flight on another replica.
    await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        API_GROUP, VERSION, namespace, CLAIM.plural, {
            "apiVersion": API_VERSION, "kind": CLAIM.kind,
            "metadata": {"name": claim_name("User", "frank@example.com")},
            "spec": {"resourceKind": "User", "value": "frank@example.com", "owner": "in-flight"}})
    with pytest.raises(ScimError) as err:
        await store.create(USERS, {"userName": "frank@example.com"})
    assert err.value.status == 409


async def test_delete_user_removes_claim_and_memberships(store: Store, kube_api: client.ApiClient,
                                                         namespace: str) -> None:
    user = await store.create(USERS, {"userName": "gina@example.com"})
    other = await store.create(USERS, {"userName": "hank@example.com"})
    group = await store.create(GROUPS, {"displayName": "Team"}, [{"value": user.id, "type": "User"},
                                                                 {"value": other.id, "type": "User"}])
    assert await stored_members(kube_api, namespace, group.id) == {user.id, other.id}
    # Created with the operator's finalizer: LiteLLM access goes before the resource does.
    assert (await stored_user(kube_api, namespace, user.id) or {})["metadata"]["finalizers"] == [FINALIZER]
    assert (await stored_group(kube_api, namespace, group.id) or {})["metadata"]["finalizers"] == [FINALIZER]
    await store.delete(USERS, user)
    assert await stored_user(kube_api, namespace, user.id) is None
    held = await get_object(kube_api, namespace, USER.plural, user.id)
    assert held is not None and held["metadata"]["deletionTimestamp"]  # Terminating until the operator is done
    assert await stored_members(kube_api, namespace, group.id) == {other.id}
    assert [c["spec"]["owner"] for c in await stored_claims(kube_api, namespace)
            if c["spec"]["resourceKind"] == "User"] == [other.id]


async def test_delete_group_removes_shards_and_claim(store: Store, kube_api: client.ApiClient,
                                                     namespace: str) -> None:
    group = await store.create(GROUPS, {"displayName": "Doomed"}, [{"value": f"u{i}", "type": "User"}
                                                                    for i in range(40)])
    assert len(await stored_shards(kube_api, namespace, group.id)) == SHARDS
    await store.delete(GROUPS, store.get(GROUPS, group.id))  # type: ignore[arg-type]
    assert await stored_group(kube_api, namespace, group.id) is None
    assert await stored_shards(kube_api, namespace, group.id) == []
    assert await stored_claims(kube_api, namespace) == []


@pytest.mark.slow
async def test_fifty_thousand_members_stay_small_and_one_member_rewrites_one_shard(
        store: Store, kube_api: client.ApiClient, namespace: str) -> None:
    members = [{"value": f"user-{i:05d}", "type": "User"} for i in range(50_000)]
    group = await store.create(GROUPS, {"displayName": "Everyone"}, members)
    shards = await stored_shards(kube_api, namespace, group.id)
    assert len(shards) <= SHARDS
    import json

    for shard in shards:
        assert len(json.dumps(shard).encode()) < 512 * 1024
    assert sum(len(s["spec"]["users"]) for s in shards) == 50_000
    before = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in shards}
    current = store.get(GROUPS, group.id)
    assert current is not None
    await store.update(GROUPS, current, current.spec, [*members, {"value": "newcomer", "type": "User"}])
    after = {s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in
             await stored_shards(kube_api, namespace, group.id)}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {shard_name(group.id, shard_of("newcomer"))}
    assert "newcomer" in await stored_members(kube_api, namespace, group.id)


async def test_informer_resumes_its_watch_and_relists_after_410(kube_api: client.ApiClient, namespace: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from functools import partial

    caplog.set_level(logging.INFO, logger="scim_endpoint.informer")
    from scim_contract import USER
    from scim_endpoint.informer import Informer

    custom = client.CustomObjectsApi(kube_api)
    informer = Informer(USER.plural, partial(custom.list_namespaced_custom_object, API_GROUP, VERSION, namespace,
                                             USER.plural))

    async def create(name: str) -> None:
        await custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, USER.plural, {
            "apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": name}, "spec": {"userName": name}})

    async def seen(name: str) -> bool:
        for _ in range(100):
            if name in informer.objects:
                return True
            await asyncio.sleep(0.05)
        return False

    informer.start()
    await asyncio.wait_for(informer.synced.wait(), 30)
    await informer.stop()
    await create("while-stopped")
    informer.start()  # resumes the watch from where it stopped
    assert await seen("while-stopped")
    await informer.stop()
    await create("after-history")
    informer.rv = 1  # a point long gone from the API server's watch history: 410 Gone, then a new list
    informer.start()
    assert await seen("after-history")
    assert "expired; listing again" in caplog.text
    assert informer.rv > 1
    await informer.stop()


async def test_a_restarted_cache_holds_each_object_as_the_api_server_does(
        store: Store, endpoint_api: client.ApiClient, kube_api: client.ApiClient, namespace: str) -> None:
    # A restart lists into structs, not dicts: every field must survive (labels, annotations, owner
    # references, finalizers, generation), users and groups without their managedFields, member
    # shards with theirs (they are sent back on a rewrite).
    user = await store.create(USERS, {"userName": "listed@example.com", "externalId": "x-1",
                                      "enterprise": {"department": "Sales"}})
    group = await store.create(GROUPS, {"displayName": "Listed"}, members=[{"value": user.id}])
    restarted = Store(endpoint_api, namespace)
    restarted.start()
    try:
        await asyncio.wait_for(restarted.wait_ready(), 30)
        for informer, plural, name in ((restarted.users, USER.plural, user.id),
                                       (restarted.groups, "scimgroups", group.id),
                                       (restarted.shards, "scimmembershards", shard_name(group.id, shard_of(user.id)))):
            served = await get_object(kube_api, namespace, plural, name)
            assert served is not None
            if informer is not restarted.shards:
                served["metadata"].pop("managedFields")
            assert informer.objects[name] == served, plural
        assert restarted.lookup(USERS, "externalId", "x-1") == {user.id}
        assert restarted.holding(user.id) == {group.id}
    finally:
        await restarted.stop()
