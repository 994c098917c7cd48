"""One identity with SSO and account-level deactivation, end to end: SCIM requests into the endpoint,
the operator, and what LiteLLM itself then does with the person (its user lookup, its SSO sign-in
function, its key and session checks)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually

import scim_contract as c
from litellm_scim import peers

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
TAG = "litellm-scim-operator"


def user_body(user_name: str, **extra: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": user_name,
            "emails": [{"value": user_name, "type": "work", "primary": True}], **extra}


def patch(path: str, value: Any) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": path, "value": value}]}


async def users_with_email(admin: Admin, email: str) -> list[str]:
    """LiteLLM's own user lookup by email (``/user/list?user_email=`` is a contains match)."""
    status, data = await admin.get("/user/list", user_email=email, page_size="100")
    assert status == 200, data
    return sorted(u["user_id"] for u in data["users"] if (u.get("user_email") or "").lower() == email.lower())


def sso_sign_in(litellm: peers.LiteLLM, identities: list[tuple[str, str]]) -> list[str | None]:
    """What LiteLLM's SSO callback resolves each (IdP user id, email) to, run by the proxy's own code
    against its database (tests/operator/litellm_sso_login.py)."""
    if litellm.root is None or litellm.port is None:
        pytest.skip("needs the local proxy kit (its database and installation), not LITELLM_URL")
    kit = peers.shared_dir() / "litellm-peer"
    pg_port = os.environ.get("LITELLM_PEER_PGPORT", "55432")
    script = Path(__file__).with_name("litellm_sso_login.py")
    command = (f'. "{kit}/env.sh" "{litellm.root}"; '
               f"export DATABASE_URL=postgresql://postgres@127.0.0.1:{pg_port}/litellm_{litellm.port}; "
               f'exec "{litellm.root}/venv/bin/python" "{script}" \'{json.dumps(identities)}\'')
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: list[str | None] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def condition(kube_rw: Kube, name: str, ctype: str, reason: str) -> dict[str, Any] | None:
    found = await kube_rw.condition(c.USER, name, ctype)
    return found if found is not None and found.get("reason") == reason else None


async def warned(kube_rw: Kube, name: str, reason: str) -> bool:
    return any(t == "Warning" and r == reason for t, r, _ in await kube_rw.events(name))


async def test_a_scim_user_is_the_user_litellm_sso_signs_in(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess], admin: Admin, kube_rw: Kube,
    litellm: peers.LiteLLM, namespace: str,
) -> None:
    first = start_operator(user_id_strategy="externalId", drift_interval="600")
    # Entra sends the object id as externalId (attribute mapping objectId -> externalId); Okta its user id.
    oid = f"0f1e2d3c-{namespace}"
    email = f"grace-{namespace}@example.com"
    status, grace = await scim("POST", "/Users", user_body(email, externalId=oid, displayName="Grace"))
    assert status == 201, grace

    user = await eventually(lambda: admin.user(oid), what="LiteLLM user under the externalId")
    assert user["sso_user_id"] == oid and user["user_email"] == email
    assert await admin.user(grace["id"]) is None  # not also under the SCIM id
    assert await users_with_email(admin, email) == [oid]
    obj = await kube_rw.get(c.USER, grace["id"])
    assert obj is not None and obj["status"]["litellm"]["userId"] == oid

    # LiteLLM's admin API seeing that identity again: refused, no second user.
    status, body = await admin.post("/user/new", {"user_id": oid, "auto_create_key": False})
    assert status == 409, body
    status, body = await admin.post("/user/new", {"user_email": email, "auto_create_key": False})
    assert status == 409, body

    # The strategy changes after the user exists: refused for that user, which stays managed under
    # the id it was created with (a deactivation still reaches it).
    first.stop()
    start_operator(drift_interval="600")
    changed = await eventually(lambda: condition(kube_rw, grace["id"], "Synced", "UserIdChanged"),
                               what="Synced=False UserIdChanged")
    assert changed["status"] == "False" and oid in changed["message"]
    await eventually(lambda: warned(kube_rw, grace["id"], "UserIdChanged"), what="a Warning Event")
    assert await admin.user(grace["id"]) is None
    await set_active(scim, grace["id"], False)

    async def marked() -> dict[str, Any] | None:
        u = await admin.user(oid)
        return u if u and u["metadata"].get("scim_active") is False else None

    await eventually(marked, what="the user under its recorded id deactivated")
    await set_active(scim, grace["id"], True)

    # Under the default strategy SSO finds the user by sso_user_id (the externalId), not by user_id.
    okta_id = f"00u-{namespace}"
    other = f"ada-{namespace}@example.com"
    status, ada = await scim("POST", "/Users", user_body(other, externalId=okta_id))
    assert status == 201, ada
    ada_user = await eventually(lambda: admin.user(ada["id"]), what="LiteLLM user under the SCIM id")
    assert ada_user["sso_user_id"] == okta_id

    # LiteLLM's SSO sign-in, as its callback runs it once the IdP answered with these claims. A
    # stranger is the control: the same function creates a user when it finds none.
    stranger = f"stranger-{namespace}"
    resolved = sso_sign_in(litellm, [(oid, email), (okta_id, other), (stranger, f"{stranger}@example.com")])
    assert resolved == [oid, ada["id"], stranger]
    assert await users_with_email(admin, email) == [oid]
    assert await users_with_email(admin, other) == [ada["id"]]
    assert await admin.user(okta_id) is None
    assert await admin.user(stranger) is not None


async def test_external_id_strategy_without_or_with_a_taken_external_id(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess], admin: Admin, kube_rw: Kube,
    namespace: str,
) -> None:
    start_operator(user_id_strategy="externalId", drift_interval="600")
    status, lin = await scim("POST", "/Users", user_body(f"lin-{namespace}@example.com"))
    assert status == 201, lin
    missing = await eventually(lambda: condition(kube_rw, lin["id"], "Synced", "NoExternalId"),
                               what="Synced=False NoExternalId")
    assert missing["status"] == "False" and "externalId" in missing["message"]
    assert await admin.user(lin["id"]) is None
    assert await users_with_email(admin, f"lin-{namespace}@example.com") == []

    # The IdP sends the externalId later: the user is created under it.
    lin_id = f"ext-lin-{namespace}"
    status, _ = await scim("PATCH", f"/Users/{lin['id']}", patch("externalId", lin_id))
    assert status in (200, 204)
    await eventually(lambda: admin.user(lin_id), what="LiteLLM user once the externalId arrived")
    await eventually(lambda: condition(kube_rw, lin["id"], "Synced", "Synced"), what="Synced=True")

    # A second ScimUser with the same externalId would be the same LiteLLM user: it is not ours.
    status, twin = await scim("POST", "/Users", user_body(f"twin-{namespace}@example.com", externalId=lin_id,
                                                          displayName="Twin"))
    assert status == 201, twin
    refused = await eventually(lambda: condition(kube_rw, twin["id"], "Synced", "NotOwned"),
                               what="Synced=False NotOwned")
    assert lin_id in refused["message"]
    first_user = await admin.user(lin_id)
    assert first_user is not None
    assert first_user["user_email"] == f"lin-{namespace}@example.com" and first_user["user_alias"] is None
    assert first_user["metadata"][TAG] == f"{namespace}/{lin['id']}"

    # Deleting the twin leaves the first one's user alone.
    status, _ = await scim("DELETE", f"/Users/{twin['id']}")
    assert status == 204
    await eventually(lambda: _gone(kube_rw, twin["id"]), what="twin deleted")
    assert await admin.user(lin_id) is not None


async def _gone(kube_rw: Kube, name: str) -> bool:
    return await kube_rw.get(c.USER, name) is None


def session_key(token: str) -> str:
    """The virtual key inside a UI session token (a JWT the dashboard keeps as a cookie)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["key"])


async def ui_login(url: str, email: str, password: str) -> tuple[int, str | None]:
    """The dashboard's username/password sign-in: (status, the session's key)."""
    async with aiohttp.ClientSession() as plain, plain.post(
            f"{url}/v2/login", json={"username": email, "password": password}) as resp:
        data = await resp.json(content_type=None)
        return resp.status, session_key(data["token"]) if resp.status == 200 else None


async def set_active(scim: Callable[..., Any], uid: str, active: bool) -> None:
    status, body = await scim("PATCH", f"/Users/{uid}", patch("active", active))
    assert status in (200, 204), body


async def answers(code: int, call: Callable[[], Awaitable[int]], what: str) -> None:
    """Wait until ``call`` (a request to the proxy) answers ``code``."""

    async def probe() -> int | None:
        got = await call()
        return got if got == code else None

    await eventually(probe, what=what)


async def as_key(url: str, key: str, method: str, path: str, body: Any = None) -> int:
    async with aiohttp.ClientSession() as plain, plain.request(
            method, url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status


async def test_deactivation_takes_the_account_not_only_its_keys(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess], admin: Admin, litellm: peers.LiteLLM,
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    email = f"hedy-{namespace}@example.com"
    status, hedy = await scim("POST", "/Users", user_body(email))
    assert status == 201, hedy
    uid = hedy["id"]
    await eventually(lambda: admin.user(uid), what="LiteLLM user created")
    await admin.post("/user/update", {"user_id": uid, "metadata": {**(await admin.user(uid) or {})["metadata"],
                                                                  "cost_center": "42"}})
    # A dashboard password, as an invitation would give (an admin-set one must be changed first).
    first, password = "Initial-Passw0rd-x1", "Hedy-Lamarr-Passw0rd-9"
    status, body = await admin.post("/user/update", {"user_id": uid, "password": first})
    assert status == 200, body
    status, forced = await ui_login(litellm.url, email, first)
    assert status == 200 and forced
    status = await as_key(litellm.url, forced, "POST", "/user/password/change",
                          {"current_password": first, "new_password": password})
    assert status == 200
    status, session = await ui_login(litellm.url, email, password)
    assert status == 200 and session
    assert await as_key(litellm.url, session, "GET", f"/user/info?user_id={uid}") == 200

    await set_active(scim, uid, False)
    await answers(401, lambda: as_key(litellm.url, session, "GET", f"/user/info?user_id={uid}"),
                  what="the open UI session refused")
    user = await admin.user(uid)
    assert user is not None and user["metadata"]["scim_active"] is False and user["metadata"]["cost_center"] == "42"

    # A key made for the user after the deactivation (no key existed to block) is refused too.
    status, later = await admin.post("/key/generate", {"user_id": uid})
    assert status == 200, later
    assert await admin.models_status(later["key"]) == 401
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert await as_key(litellm.url, later["key"], "POST", "/chat/completions", chat) == 401
    # A new dashboard sign-in still answers 200 (the proxy's password check does not look at the
    # mark), but the session it hands out is refused on every call.
    status, again = await ui_login(litellm.url, email, password)
    assert status == 200 and again
    assert await as_key(litellm.url, again, "GET", f"/user/info?user_id={uid}") == 401

    await set_active(scim, uid, True)
    await answers(200, lambda: admin.models_status(later["key"]), what="the later key accepted after reactivation")
    assert await as_key(litellm.url, again, "GET", f"/user/info?user_id={uid}") == 200
    user = await admin.user(uid)
    assert user is not None and user["metadata"] == {TAG: f"{namespace}/{uid}", "cost_center": "42"}


async def test_two_users_with_one_external_id_under_the_default_strategy(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess], admin: Admin, kube_rw: Kube,
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    shared = f"ext-shared-{namespace}"
    status, first = await scim("POST", "/Users", user_body(f"first-{namespace}@example.com", externalId=shared))
    assert status == 201, first
    user = await eventually(lambda: admin.user(first["id"]), what="first user")
    assert user["sso_user_id"] == shared
    status, second = await scim("POST", "/Users", user_body(f"second-{namespace}@example.com", externalId=shared))
    assert status == 201, second

    # LiteLLM keeps sso_user_id unique: the second person gets a user without it, and a Warning.
    other = await eventually(lambda: admin.user(second["id"]), what="second user")
    assert other["sso_user_id"] is None
    await eventually(lambda: warned(kube_rw, second["id"], "SsoUserIdTaken"), what="a Warning Event")
    await eventually(lambda: condition(kube_rw, second["id"], "Synced", "Synced"), what="Synced=True")
    again = await admin.user(first["id"])
    assert again is not None and again["sso_user_id"] == shared


async def test_a_deactivation_mark_removed_in_litellm_is_put_back(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess], admin: Admin, kube_rw: Kube,
    namespace: str,
) -> None:
    start_operator(drift_interval="2")
    status, user = await scim("POST", "/Users", user_body(f"mark-{namespace}@example.com", active=False))
    assert status == 201, user
    uid = user["id"]

    async def mark() -> dict[str, Any] | None:
        found = await admin.user(uid)
        return found["metadata"] if found and found["metadata"].get("scim_active") is False else None

    metadata = await eventually(mark, what="created already marked inactive")
    status, _ = await admin.post("/user/update", {"user_id": uid, "metadata": {TAG: metadata[TAG]}})
    assert status == 200
    status, key = await admin.post("/key/generate", {"user_id": uid})
    assert status == 200
    await eventually(mark, what="the mark put back by the drift check")
    await answers(401, lambda: admin.models_status(key["key"]), what="the key refused again")
    corrected = await eventually(lambda: condition(kube_rw, uid, "Drifted", "Corrected"), what="Drifted Corrected")
    assert "not marked inactive" in corrected["message"]
