"""Under the externalId team strategy a group's externalId names its LiteLLM team, so a token holder
who copies another group's externalId would share (or take over) that team: with
``--unique-group-external-id`` the endpoint refuses it with 409 uniqueness, across replicas too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from operator_helpers import start_endpoint, stop_endpoint
from scim_http import GROUP, Scim, assert_error, backing, patch_body
from stored import list_objects

from scim_endpoint.app import create_app


@pytest.fixture
async def unique(kube_api: client.ApiClient, endpoint_api: client.ApiClient, namespace: str,
                 token: str) -> AsyncIterator[Scim]:
    async with (backing(endpoint_api, namespace, unique_group_external_id=True) as (store, tokens),
                TestServer(create_app(store, tokens)) as server, TestClient(server) as http):
        yield Scim(http, token, kube_api, namespace)


def group(name: str, external_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"schemas": [GROUP], "displayName": name}
    if external_id is not None:
        body["externalId"] = external_id
    return body


async def _external_ids(scim: Scim) -> list[str]:
    return sorted(g["spec"].get("externalId", "") for g in await list_objects(scim.api, scim.namespace, "scimgroups"))


async def test_duplicate_external_id_is_refused_by_post_put_and_patch(unique: Scim) -> None:
    first = await unique.post("/Groups", group("Eng", "team-1"))
    assert first.status == 201, first.text
    assert_error(await unique.post("/Groups", group("Eng copy", "team-1")), 409, "uniqueness")
    # externalId is case-exact: another case is another value.
    assert (await unique.post("/Groups", group("Eng upper", "TEAM-1"))).status == 201
    other = await unique.post("/Groups", group("Sales", "team-2"))
    gid = other.body["id"]
    assert_error(await unique.put(f"/Groups/{gid}", group("Sales", "team-1")), 409, "uniqueness")
    assert_error(await unique.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "path": "externalId", "value": "team-1"})), 409, "uniqueness")
    assert_error(await unique.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "value": {"externalId": "team-1"}})), 409, "uniqueness")
    assert await _external_ids(unique) == ["TEAM-1", "team-1", "team-2"]
    # A value given up, by a change or a delete, is free again.
    moved = await unique.patch(f"/Groups/{first.body['id']}", patch_body(
        {"op": "replace", "path": "externalId", "value": "team-3"}))
    assert moved.status in (200, 204), moved.text
    assert (await unique.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "path": "externalId", "value": "team-1"}))).status in (200, 204)
    assert (await unique.delete(f"/Groups/{gid}")).status == 204
    assert (await unique.post("/Groups", group("Eng again", "team-1"))).status == 201
    # Groups without an externalId are not affected.
    for name in ("A", "B"):
        assert (await unique.post("/Groups", group(name))).status == 201


async def test_without_the_flag_external_ids_may_repeat(scim: Scim) -> None:
    assert (await scim.post("/Groups", group("Eng", "team-1"))).status == 201
    assert (await scim.post("/Groups", group("Eng copy", "team-1"))).status == 201


@pytest.mark.slow
async def test_two_replicas_racing_for_one_external_id_create_one_group(
        endpoint_kubeconfig: str, namespace: str, token: str, kube_api: client.ApiClient, tmp_path: Path) -> None:
    started = [start_endpoint(endpoint_kubeconfig, namespace, tmp_path / f"endpoint-{i}.log",
                              "--unique-group-external-id") for i in range(2)]
    try:
        async with aiohttp.ClientSession() as http:
            a, b = (Scim(http, token, kube_api, namespace, base=ep.url) for ep in started)
            for i in range(10):
                first, second = await asyncio.gather(a.post("/Groups", group(f"A{i}", f"ext-{i}")),
                                                     b.post("/Groups", group(f"B{i}", f"ext-{i}")))
                assert sorted([first.status, second.status]) == [201, 409], (first.text, second.text)
                assert_error(first if first.status == 409 else second, 409, "uniqueness")
            assert await _external_ids(a) == sorted(f"ext-{i}" for i in range(10))
    finally:
        for ep in started:
            stop_endpoint(ep)
