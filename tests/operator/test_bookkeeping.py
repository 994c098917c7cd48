"""Kopf's bookkeeping (scim_operator.bookkeeping): a new user costs the operator one status write
(plus the finalizer when it was not created with it), a status-only change runs no handler, a spec
change still does."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kubernetes_asyncio import client, watch
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum

import scim_contract as c
from scim_operator.bookkeeping import FIELD, StatusDiffBase

PREFIX = f"operator.{c.API_GROUP}"
CALLS = "litellm_scim_operator_litellm_calls_total"


def _body(spec: dict[str, Any], *, status: dict[str, Any] | None = None,
          annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": c.API_VERSION, "kind": c.USER.kind,
                      "metadata": {"name": "u", "uid": "uid-1", "annotations": annotations or {}},
                      "spec": spec, "status": status or {}})


def test_the_handlers_status_write_replaces_kopfs_own() -> None:
    storage = StatusDiffBase(prefix=PREFIX)
    body = _body({"userName": "a@example.com"})
    assert storage.fetch(body=body) is None  # never handled: Kopf sees a creation

    fields = storage.handled(body)
    assert json.loads(fields[FIELD]) == {"spec": {"userName": "a@example.com"}}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch  # the handler's status write carried it

    handled = _body({"userName": "a@example.com"}, status=fields)
    assert storage.fetch(body=handled) == {"spec": {"userName": "a@example.com"}}
    assert storage.handled(handled) == {}  # nothing new to record (a resume)


def test_a_copy_from_before_the_handlers_own_write_is_recognised_as_already_handled() -> None:
    storage = StatusDiffBase(prefix=PREFIX)
    created = _body({"userName": "a@example.com", "active": True})
    first = storage.handled(created)
    storage.recorded(created, first)
    storage.store(body=created, patch=kopf.Patch(), essence=storage.build(body=created))

    # Deactivation: the handler records its intent in the status (a write without the new essence)
    # and finishes with a write that has it; Kopf may get the intent copy only after the handler.
    intent = _body({"userName": "a@example.com", "active": False}, status=first)
    storage.recorded(intent, storage.handled(intent))
    storage.store(body=intent, patch=kopf.Patch(), essence=storage.build(body=intent))

    assert storage.superseded(intent)
    patch = kopf.Patch()
    storage.store(body=intent, patch=patch, essence=storage.build(body=intent))
    assert not patch  # and nothing to write for it
    assert not storage.superseded(created)  # the spec changed back since: handle it
    storage.forget(intent)
    assert not storage.superseded(intent)


def test_kopf_writes_the_essence_itself_when_no_handler_did() -> None:
    storage = StatusDiffBase(prefix=PREFIX)
    body = _body({"userName": "a@example.com"})
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert json.loads(patch["status"][FIELD]) == {"spec": {"userName": "a@example.com"}}


def test_objects_handled_by_an_older_build_are_read_from_kopfs_annotation() -> None:
    storage = StatusDiffBase(prefix=PREFIX)
    legacy = {f"{PREFIX}/last-handled-configuration": '{"spec":{"userName":"a@example.com"}}\n'}
    body = _body({"userName": "a@example.com"}, annotations=legacy)
    assert storage.fetch(body=body) == {"spec": {"userName": "a@example.com"}}
    assert storage.build(body=body) == {"spec": {"userName": "a@example.com"}}  # annotation not in it


def test_the_marker_annotation_is_written_only_along_with_progress() -> None:
    progress = StatusDiffBase(prefix=PREFIX).progress
    body = _body({"userName": "a@example.com"})
    done = kopf.Patch()
    progress.store(key=kopf.HandlerId("user-create"), record={"success": True}, body=body, patch=done)
    progress.purge(key=kopf.HandlerId("user-create"), body=body, patch=done)
    assert not done  # handled at the first attempt: nothing to write

    retrying = kopf.Patch()
    progress.store(key=kopf.HandlerId("user-create"), record={"retries": 1}, body=body, patch=retrying)
    assert set(retrying["metadata"]["annotations"]) == {f"{PREFIX}/user-create", f"{PREFIX}/kopf-managed"}


async def _watch_writes(api: client.ApiClient, ns: str, name: str, out: list[dict[str, Any]]) -> None:
    objects = client.CustomObjectsApi(api)
    w = watch.Watch()
    try:
        async for event in w.stream(objects.list_namespaced_custom_object, c.API_GROUP, c.VERSION, ns,
                                    c.USER.plural, timeout_seconds=120):
            if event["object"]["metadata"]["name"] == name:
                out.append({"type": event["type"], "object": event["object"]})
    finally:
        await w.close()


@pytest.mark.litellm
@pytest.mark.slow
@pytest.mark.parametrize("created_by", ["endpoint", "kubectl"])
async def test_a_new_user_costs_one_status_write_and_status_changes_run_no_handler(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, kube_api: client.ApiClient, admin: Admin,
    ids: Callable[[str], str], namespace: str, created_by: str,
) -> None:
    operator = start_operator(drift_interval="3600")  # no drift check writes in between
    name = ids("kim")
    seen: list[dict[str, Any]] = []
    watcher = asyncio.create_task(_watch_writes(kube_api, namespace, name, seen))
    try:
        await asyncio.sleep(0.5)  # the watch is open before the object exists
        # The endpoint creates users with the operator's finalizer set; by hand it is usually missing.
        metadata: dict[str, Any] = {"name": name}
        if created_by == "endpoint":
            metadata["finalizers"] = [c.FINALIZER]
        await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            c.API_GROUP, c.VERSION, namespace, c.USER.plural,
            {"apiVersion": c.API_VERSION, "kind": c.USER.kind, "metadata": metadata,
             "spec": {"userName": f"{name}@example.com"}})
        await eventually(lambda: kube_rw.condition(c.USER, name, "Synced"), what="Synced condition")
        await asyncio.sleep(2.0)  # whatever the operator still writes about this user arrives meanwhile

        writes = [e["object"] for e in seen if e["type"] == "MODIFIED"]
        expected = [["status"]] if created_by == "endpoint" else [[], ["status"]]  # [] : the finalizer alone
        assert [sorted(k for k in o if k == "status") for o in writes] == expected
        assert all(o["metadata"]["finalizers"] == [c.FINALIZER] for o in writes)
        obj = writes[-1]
        assert not [k for k in obj["metadata"].get("annotations") or {} if k.startswith(PREFIX)]
        assert json.loads(obj["status"][FIELD])["spec"] == obj["spec"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

        # Another writer changing the status is not a change to handle: no LiteLLM call follows.
        calls = metric_sum(operator.metrics(), CALLS)
        await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
            c.API_GROUP, c.VERSION, namespace, c.USER.plural, name, {"status": {"groups": 7}},
            _content_type="application/merge-patch+json")
        await asyncio.sleep(2.0)
        assert metric_sum(operator.metrics(), CALLS) == calls

        # A spec change is.
        await kube_rw.patch_spec(c.USER, name, {"displayName": "Kim K."})

        async def renamed() -> dict[str, Any] | None:
            user = await admin.user(name)
            return user if user and user.get("user_alias") == "Kim K." else None

        await eventually(renamed, what="alias updated in LiteLLM")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
