"""Status writes of the operator on the real API server: no read first, yet never a lost update."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

import scim_contract as c
from scim_operator.resources import Resources


async def _user(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    objects = client.CustomObjectsApi(api)
    body = {"apiVersion": c.API_VERSION, "kind": c.USER.kind, "metadata": {"name": name},
            "spec": {"userName": f"{name}@example.com"}}
    created: dict[str, Any] = await objects.create_namespaced_custom_object(
        c.API_GROUP, c.VERSION, ns, c.USER.plural, body)
    return created


async def _status(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(c.API_GROUP, c.VERSION, ns,
                                                                          c.USER.plural, name)
    return dict(obj.get("status") or {})


async def test_a_stale_copy_is_detected_and_the_other_writers_change_survives(
        kube_api: client.ApiClient, namespace: str) -> None:
    resources = Resources(kube_api, namespace)
    seen = await _user(kube_api, namespace, "ada")
    resources.seen(c.USER, "ada", seen)
    # Another writer changes the status after the operator's watch delivered the object.
    other = Resources(kube_api, namespace)
    await other.update_status(c.USER, "ada", lambda st, _o: {**st, "groups": 3})

    # A change computed from the stale copy would write groups=1 over the other writer's 3.
    written = await resources.update_status(c.USER, "ada", lambda st, _o: {**st, "groups": st.get("groups", 0) + 1})

    assert written is not None
    assert await _status(kube_api, namespace, "ada") == {"groups": 4}


async def test_a_write_from_a_fresh_copy_needs_no_read_and_a_deleted_object_is_none(
        kube_api: client.ApiClient, namespace: str) -> None:
    resources = Resources(kube_api, namespace)
    resources.seen(c.USER, "bo", await _user(kube_api, namespace, "bo"))
    first = await resources.update_status(c.USER, "bo", lambda st, _o: {**st, "groups": 1})
    # The write's answer is the newest copy: a second write builds on it.
    second = await resources.update_status(c.USER, "bo", lambda st, _o: {**st, "groups": st["groups"] + 1})
    assert first is not None and second is not None
    assert await _status(kube_api, namespace, "bo") == {"groups": 2}

    await client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.USER.plural, "bo")
    assert await resources.update_status(c.USER, "bo", lambda st, _o: {**st, "groups": 5}) is None
