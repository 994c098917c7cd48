"""The provisioning audit trail: every SCIM write on a user or group leaves one ``scim_endpoint.audit``
log line and an Event on the ScimUser/ScimGroup naming the token's name (never its value), the
operation and the result — refused writes included. The app runs in-process under the endpoint's
ServiceAccount (the chart's Role must allow the Events: the autouse RBAC guard fails the test if not)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from operator_helpers import start_endpoint, stop_endpoint
from scim_http import GROUP, Scim, backing, patch_body, user_body, write_tokens

from scim_endpoint.app import create_app
from scim_endpoint.audit import Audit

TOKEN_NAME = "entra-prod"


@dataclass
class Audited:
    scim: Scim
    audit: Audit
    token: str


@pytest.fixture
async def audited(kube_api: client.ApiClient, endpoint_api: client.ApiClient,
                  namespace: str) -> AsyncIterator[Audited]:
    token = secrets.token_urlsafe(24)
    await write_tokens(kube_api, namespace, {TOKEN_NAME: token, "other": secrets.token_urlsafe(24)})
    async with backing(endpoint_api, namespace) as (store, tokens):
        audit = Audit(store, endpoint_api)
        audit.start()
        app = create_app(store, tokens, audit_trail=audit)
        async with TestServer(app) as server, TestClient(server) as http:
            yield Audited(Scim(http, token, kube_api, namespace), audit, token)
        await audit.stop()


async def events_of(a: Audited, kind: str, name: str) -> list[Any]:
    await asyncio.wait_for(a.audit.drained(), 10)
    core = client.CoreV1Api(a.scim.api)
    found = await core.list_namespaced_event(a.scim.namespace)
    mine = [e for e in found.items if e.involved_object.kind == kind and e.involved_object.name == name]
    return sorted(mine, key=lambda e: e.metadata.name)  # <name>.<time in hex>: in the order written


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in caplog.records if r.name == "scim_endpoint.audit" and hasattr(r, "fields")]


def assert_no_token(a: Audited, caplog: pytest.LogCaptureFixture, events: list[Any]) -> None:
    assert a.token not in caplog.text
    for record in caplog.records:
        assert a.token not in str(getattr(record, "fields", ""))
    for event in events:
        assert a.token not in event.message and a.token not in event.reason


async def test_user_create_replace_patch_delete_are_logged_and_described(
        audited: Audited, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scim_endpoint.audit")
    scim = audited.scim
    created = await scim.post("/Users", user_body("ada@example.com"))
    assert created.status == 201, created.text
    uid = created.body["id"]
    replaced = await scim.put(f"/Users/{uid}", user_body("ada@example.com", displayName="Ada L"))
    assert replaced.status == 200, replaced.text
    patched = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "active", "value": False}))
    assert patched.status == 200, patched.text
    stored = await client.CustomObjectsApi(scim.api).get_namespaced_custom_object(
        "scim.litellm-operator.dev", "v1alpha1", scim.namespace, "scimusers", uid)
    events = await events_of(audited, "ScimUser", uid)  # before the delete: the object's uid is known
    deleted = await scim.delete(f"/Users/{uid}")
    assert deleted.status == 204

    lines = audit_lines(caplog)
    assert [(line["method"], line["status"]) for line in lines] == [
        ("POST", 201), ("PUT", 200), ("PATCH", 200), ("DELETE", 204)]
    for line in lines:
        assert line["token"] == TOKEN_NAME
        assert line["resourceType"] == "User" and line["id"] == uid and line["userName"] == "ada@example.com"

    assert [e.reason for e in events] == ["Provisioned", "Updated", "Updated"]
    assert all(e.type == "Normal" for e in events)
    assert all(e.involved_object.uid == stored["metadata"]["uid"] for e in events)
    assert events[0].message == f"POST by token '{TOKEN_NAME}': User 'ada@example.com' created (201)"
    assert events[2].message.startswith(f"PATCH by token '{TOKEN_NAME}'")
    after = await events_of(audited, "ScimUser", uid)
    assert [e.reason for e in after][-1] == "Deprovisioned"
    assert caplog.records[-1].getMessage() == (
        f"SCIM write token={TOKEN_NAME} method=DELETE resourceType=User id={uid} userName=ada@example.com status=204")
    assert f"DELETE by token '{TOKEN_NAME}'" in after[-1].message
    assert_no_token(audited, caplog, after)


async def test_group_writes_are_described_with_the_display_name(
        audited: Audited, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scim_endpoint.audit")
    scim = audited.scim
    created = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Data Science"})
    assert created.status == 201, created.text
    gid = created.body["id"]
    # Entra's group PATCH answers 204 without a body: still one audit record.
    patched = await scim.patch(f"/Groups/{gid}", patch_body(
        {"op": "replace", "path": "displayName", "value": "Data Science EU"}))
    assert patched.status == 204
    events = await events_of(audited, "ScimGroup", gid)
    assert [e.reason for e in events] == ["Provisioned", "Updated"]
    assert "Group 'Data Science EU' patched" in events[1].message
    lines = audit_lines(caplog)
    assert [(line["method"], line["displayName"], line["status"]) for line in lines] == [
        ("POST", "Data Science", 201), ("PATCH", "Data Science EU", 204)]
    assert_no_token(audited, caplog, events)


async def test_refused_writes_are_logged_with_scim_type_and_warned_on_the_resource(
        audited: Audited, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scim_endpoint.audit")
    scim = audited.scim
    created = await scim.post("/Users", user_body("grace@example.com"))
    uid = created.body["id"]
    duplicate = await scim.post("/Users", user_body("grace@example.com"))
    assert duplicate.status == 409
    bad = await scim.patch(f"/Users/{uid}", patch_body({"op": "replace", "path": "active", "value": "maybe"}))
    assert bad.status == 400
    unauthenticated = await scim.patch(f"/Users/{uid}", patch_body(
        {"op": "replace", "path": "active", "value": False}), token="not-a-token")
    assert unauthenticated.status == 401

    lines = audit_lines(caplog)
    assert [(line["method"], line["status"], line.get("scimType"), line["token"]) for line in lines] == [
        ("POST", 201, None, TOKEN_NAME), ("POST", 409, "uniqueness", TOKEN_NAME),
        ("PATCH", 400, bad.body["scimType"], TOKEN_NAME), ("PATCH", 401, None, None)]
    assert lines[1]["userName"] == "grace@example.com" and lines[1]["id"] is None
    events = await events_of(audited, "ScimUser", uid)
    # The refused PATCH is a Warning on the user; the request without a token leaves no Event.
    assert [(e.reason, e.type) for e in events] == [("Provisioned", "Normal"), ("Refused", "Warning")]
    assert f"400 {bad.body['scimType']}" in events[1].message
    assert "not-a-token" not in caplog.text
    assert_no_token(audited, caplog, events)


async def test_events_never_delay_the_response_and_overflow_is_counted(
        kube_api: client.ApiClient, endpoint_api: client.ApiClient, namespace: str, token: str) -> None:
    """A full queue drops the Event (counted) and the write still answers at once."""
    async with backing(endpoint_api, namespace) as (store, tokens):
        audit = Audit(store, endpoint_api, queue_size=1)  # not started: nothing drains the queue
        app = create_app(store, tokens, audit_trail=audit)
        async with TestServer(app) as server, TestClient(server) as http:
            scim = Scim(http, token, kube_api, namespace)
            for n in range(3):
                assert (await scim.post("/Users", user_body(f"user{n}@example.com"))).status == 201
        assert audit.dropped._value.get() == 2


@pytest.mark.parametrize("flag", ["--audit-events", "--no-audit-events"])
async def test_the_endpoint_process_logs_and_records_events_unless_told_not_to(
        endpoint_kubeconfig: str, kube_api: client.ApiClient, namespace: str, token: str, tmp_path: Path,
        flag: str) -> None:
    """The real process, under the chart's Role: the audit line in its log, the Event per the flag."""
    ep = start_endpoint(endpoint_kubeconfig, namespace, tmp_path / "endpoint.log", flag)
    try:
        async with aiohttp.ClientSession() as http:
            scim = Scim(http, token, kube_api, namespace, base=ep.url)
            created = await scim.post("/Users", user_body("proc@example.com"))
            assert created.status == 201
            uid = created.body["id"]
            core = client.CoreV1Api(kube_api)
            reasons: list[str] = []
            for _ in range(50):  # the Event is sent after the response
                found = await core.list_namespaced_event(namespace)
                reasons = [e.reason for e in found.items if e.involved_object.name == uid]
                if reasons or flag == "--no-audit-events":
                    break
                await asyncio.sleep(0.1)
    finally:
        stop_endpoint(ep)
    log = ep.log.read_text()
    assert (f"scim_endpoint.audit: SCIM write token=ci method=POST resourceType=User id={uid} "
            "userName=proc@example.com status=201") in log
    assert token not in log
    if flag == "--no-audit-events":
        await asyncio.sleep(0.5)
        found = await client.CoreV1Api(kube_api).list_namespaced_event(namespace)
        assert not [e for e in found.items if e.involved_object.name == uid]
    else:
        assert reasons == ["Provisioned"]
