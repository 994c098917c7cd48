"""Reads of the stored custom resources, the way `kubectl get` sees them."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scim_contract import API_GROUP, CLAIM, GROUP, LABEL_GROUP, SHARD, USER, VERSION


async def get_object(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            API_GROUP, VERSION, namespace, plural, name)
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def list_objects(api: client.ApiClient, namespace: str, plural: str, **kwargs: Any) -> list[dict[str, Any]]:
    body = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        API_GROUP, VERSION, namespace, plural, **kwargs)
    items: list[dict[str, Any]] = body["items"]
    return items


def _live(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """None for a deleted resource, also one the operator's finalizer still holds (Terminating)."""
    return None if obj is None or obj["metadata"].get("deletionTimestamp") else obj


async def stored_user(api: client.ApiClient, namespace: str, uid: str) -> dict[str, Any] | None:
    return _live(await get_object(api, namespace, USER.plural, uid))


async def stored_group(api: client.ApiClient, namespace: str, gid: str) -> dict[str, Any] | None:
    return _live(await get_object(api, namespace, GROUP.plural, gid))


async def stored_shards(api: client.ApiClient, namespace: str, gid: str) -> list[dict[str, Any]]:
    return await list_objects(api, namespace, SHARD.plural, label_selector=f"{LABEL_GROUP}={gid}")


async def stored_members(api: client.ApiClient, namespace: str, gid: str) -> set[str]:
    members: set[str] = set()
    for shard in await stored_shards(api, namespace, gid):
        members.update(shard["spec"].get("users") or [])
        members.update(shard["spec"].get("groups") or [])
    return members


async def stored_claims(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return await list_objects(api, namespace, CLAIM.plural)
