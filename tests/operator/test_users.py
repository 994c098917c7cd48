"""ScimUser -> LiteLLM user, against a real API server and a real LiteLLM proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

TAG = "litellm-scim-operator"


async def test_user_created_updated_deactivated_reactivated_deleted(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator()
    name = ids("alice")
    await kube_rw.create(c.USER, name, {
        "userName": f"{name}@example.com", "displayName": "Alice Liddell",
        "emails": [{"value": f"other-{name}@example.com"}, {"value": f"{name}@example.com", "primary": True}],
    })

    user = await eventually(lambda: admin.user(name), what="LiteLLM user created")
    assert user["user_email"] == f"{name}@example.com"  # the primary email, not the first
    assert user["user_alias"] == "Alice Liddell"
    assert user["metadata"][TAG] == f"{namespace}/{name}"
    synced = await eventually(lambda: kube_rw.condition(c.USER, name, "Synced"), what="Synced condition")
    assert synced["status"] == "True"
    obj = await kube_rw.get(c.USER, name)
    assert obj is not None
    assert obj["status"]["litellm"]["userId"] == name
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert any(r == "Created" for _, r, _ in await kube_rw.events(name))
    # No key was created for the user (LiteLLM's default would create one).
    status, keys = await admin.get("/key/list", user_id=name)
    assert status == 200
    assert keys["keys"] == []

    # Metadata someone else put on the user survives our updates (LiteLLM replaces metadata).
    await admin.post("/user/update", {"user_id": name, "metadata": {**user["metadata"], "cost_center": "42"}})
    await kube_rw.patch_spec(c.USER, name, {"displayName": "Alice L.", "emails": [
        {"value": f"new-{name}@example.com", "primary": True}]})

    async def updated() -> dict[str, Any] | None:
        u = await admin.user(name)
        done = u and u["user_alias"] == "Alice L." and u["user_email"] == f"new-{name}@example.com"
        return u if done else None

    user = await eventually(updated, what="alias and email updated")
    assert user["metadata"] == {TAG: f"{namespace}/{name}", "cost_center": "42"}

    # A key the user got from LiteLLM works, stops working on deactivation, works again after.
    status, generated = await admin.post("/key/generate", {"user_id": name})
    assert status == 200
    key, key_hash = generated["key"], generated["token"]
    assert await admin.models_status(key) == 200

    await kube_rw.patch_spec(c.USER, name, {"active": False})

    async def blocked() -> int | None:
        code = await admin.models_status(key)
        return code if code == 401 else None

    await eventually(blocked, what="key refused while the user is inactive")
    obj = await eventually(lambda: _with_blocked(kube_rw, name), what="blockedKeys recorded")
    assert obj["status"]["litellm"]["blockedKeys"] == [key_hash]

    async def deactivated() -> dict[str, Any] | None:
        ready = await kube_rw.condition(c.USER, name, "Ready")
        return ready if ready and ready["reason"] == "Deactivated" else None

    ready = await eventually(deactivated, what="Ready reason Deactivated")
    assert ready["message"] == "user deactivated; 1 LiteLLM key(s) blocked"
    assert any(r == "KeysBlocked" for _, r, _ in await kube_rw.events(name))
    assert key not in str(obj) and key not in str(await kube_rw.events(name))  # plaintext never stored

    await kube_rw.patch_spec(c.USER, name, {"active": True})

    async def works_again() -> int | None:
        code = await admin.models_status(key)
        return code if code == 200 else None

    await eventually(works_again, what="key accepted again after reactivation")
    obj = await kube_rw.get(c.USER, name)
    assert obj is not None

    # Deletion: the user and its keys are gone from LiteLLM, then the resource goes.
    await kube_rw.delete(c.USER, name)

    async def gone() -> bool:
        return await admin.user(name) is None and await kube_rw.get(c.USER, name) is None

    await eventually(gone, what="LiteLLM user deleted and finalizer released")
    assert await admin.models_status(key) == 401
    # (/key/info still answers for deleted keys from LiteLLM's audit copy; the listing is the truth.)
    status, listing = await admin.get("/key/list", user_id=name)
    assert status == 200
    assert key_hash not in listing["keys"]


async def _with_blocked(kube_rw: Kube, name: str) -> dict[str, Any] | None:
    obj = await kube_rw.get(c.USER, name)
    blocked = (((obj or {}).get("status") or {}).get("litellm") or {}).get("blockedKeys")
    return obj if blocked else None


async def test_keys_of_an_inactive_user_are_blocked_and_unblocked_only_if_we_blocked_them(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    start_operator()
    name = ids("bob")
    await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com"})
    await eventually(lambda: admin.user(name), what="LiteLLM user created")
    _, mine = await admin.post("/key/generate", {"user_id": name})
    _, admins = await admin.post("/key/generate", {"user_id": name})
    # An administrator blocked this key on purpose: reactivation must not unblock it.
    await admin.post("/key/block", {"key": admins["token"]})

    await kube_rw.patch_spec(c.USER, name, {"active": False})
    obj = await eventually(lambda: _with_blocked(kube_rw, name), what="blockedKeys recorded")
    assert obj["status"]["litellm"]["blockedKeys"] == [mine["token"]]
    await kube_rw.patch_spec(c.USER, name, {"active": True})

    async def unblocked() -> int | None:
        code = await admin.models_status(mine["key"])
        return code if code == 200 else None

    await eventually(unblocked, what="our key unblocked")
    assert await admin.models_status(admins["key"]) == 401


async def test_a_litellm_user_without_our_tag_is_never_modified(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    name = ids("carol")
    status, _ = await admin.post("/user/new", {"user_id": name, "user_alias": "Hand made",
                                              "auto_create_key": False, "metadata": {"team": "ops"}})
    assert status == 200
    start_operator()
    await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com", "displayName": "Carol"})

    synced = await eventually(lambda: kube_rw.condition(c.USER, name, "Synced"), what="Synced condition")
    assert synced["status"] == "False"
    assert synced["reason"] == "NotOwned"
    assert "ownership tag" in synced["message"]
    user = await admin.user(name)
    assert user is not None
    assert user["user_alias"] == "Hand made"
    assert user["metadata"] == {"team": "ops"}
    await kube_rw.delete(c.USER, name)
    await eventually(lambda: _absent(kube_rw, name), what="resource deleted")
    assert await admin.user(name) is not None  # not ours: left alone on deletion too


async def _absent(kube_rw: Kube, name: str) -> bool:
    return await kube_rw.get(c.USER, name) is None


async def test_litellm_refusal_is_the_condition_message(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    start_operator()
    first, second = ids("dup1"), ids("dup2")
    shared = f"shared-{first}@example.com"
    await kube_rw.create(c.USER, first, {"userName": f"{first}@example.com", "emails": [{"value": shared}]})
    await eventually(lambda: admin.user(first), what="first user")
    await kube_rw.create(c.USER, second, {"userName": f"{second}@example.com", "emails": [{"value": shared}]})

    async def refused() -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.USER, second, "Synced")
        return cond if cond and cond["status"] == "False" else None

    cond = await eventually(refused, what="Synced=False for the duplicate email")
    assert cond["reason"] == "LiteLLMRejected"
    # LiteLLM's own words, without the address it quotes (conditions and Events are namespace-readable).
    assert cond["message"] == "/user/new: User with email <email> already exists (HTTP 409)"
    assert await admin.user(second) is None


async def test_drift_checks_read_users_together_and_recreate_one_deleted_in_litellm(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    """Each user is checked every drift interval (2 s here), but the users due together cost one
    /user/list call, not a /user/info each; a user deleted in LiteLLM is found and made again."""
    operator = start_operator(drift_interval="2")
    names = [ids(f"drift{i}") for i in range(6)]
    for name in names:
        await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com"})
    for name in names:
        await eventually(lambda n=name: _synced(kube_rw, n), what=f"{name} synced")

    def calls(endpoint: str) -> float:
        return metric_sum(operator.metrics(), "litellm_scim_operator_litellm_calls_total", endpoint=endpoint)

    infos, lists = calls("/user/info"), calls("/user/list")
    await asyncio.sleep(8)  # the drift sweep passes about three times
    checks = calls("/user/list") - lists
    assert checks >= 2, "the drift checks read LiteLLM"
    assert calls("/user/info") - infos == 0, "no user was read alone: nothing differed"

    status, _ = await admin.post("/user/delete", {"user_ids": [names[0]]})
    assert status == 200
    corrected = await eventually(lambda: _reason(kube_rw, names[0], "Corrected"), what="drift corrected")
    assert "was deleted in LiteLLM" in corrected["message"]
    again = await eventually(lambda: admin.user(names[0]), what="LiteLLM user made again")
    assert again["user_email"] == f"{names[0]}@example.com"


async def _synced(kube: Kube, name: str) -> dict[str, Any] | None:
    cond = await kube.condition(c.USER, name, "Synced")
    return cond if cond and cond.get("status") == "True" else None


async def _reason(kube: Kube, name: str, reason: str) -> dict[str, Any] | None:
    cond = await kube.condition(c.USER, name, "Drifted")
    return cond if cond and cond.get("reason") == reason else None
