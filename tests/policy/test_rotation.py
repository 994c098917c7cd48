"""Key rotation with an overlap, on demand and on schedule, surviving an operator restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import key_other_than, put_policy, rotate_keys, secret_data

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed where these tests' policies deliver them."""
    return [namespace]


def _answers(admin: Admin, key: str, status: int) -> Callable[[], object]:
    async def probe() -> bool:
        return await admin.models_status(key) == status

    return probe


async def test_on_demand_rotation_keeps_both_keys_during_the_overlap(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    group = ids("svc")
    await put_policy(kube_rw, "services", {
        "selector": {"displayNamePattern": "service*"},
        "keys": {"perTeam": {"enabled": True, "rotation": {"overlap": "4s"}}},
    })
    await kube_rw.create(c.GROUP, group, {"displayName": f"Service {namespace}"})
    secret_name = f"litellm-team-key-{group}"
    old = (await eventually(lambda: secret_data(kube_rw, secret_name), what="team key"))["api-key"]
    assert await admin.models_status(old) == 200

    await rotate_keys(kube_rw, group, "2026-01-01T00:00:00Z")
    new = await eventually(key_other_than(kube_rw, secret_name, old), within=15, what="rotated key in the Secret")
    # Overlap: both work.
    assert await admin.models_status(new) == 200
    assert await admin.models_status(old) == 200
    # After it, only the new one.
    await eventually(_answers(admin, old, 401), within=15, what="old key deleted after the overlap")
    assert await admin.models_status(new) == 200
    events = [m for _, r, m in await kube_rw.events(group) if r == "KeyRotated"]
    assert events and all(old not in m and new not in m for m in events)

    # The same annotation value again does not rotate; a new value does.
    await rotate_keys(kube_rw, group, "2026-01-01T00:00:00Z")
    await rotate_keys(kube_rw, group, "2026-01-02T00:00:00Z")
    newer = await eventually(key_other_than(kube_rw, secret_name, new), within=15, what="second rotation")
    assert await admin.models_status(newer) == 200


async def test_scheduled_rotation_and_pending_deletion_survive_a_restart(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    operator = start_operator(drift_interval="600")
    group = ids("sched")
    await put_policy(kube_rw, "scheduled", {
        "selector": {"displayNamePattern": "scheduled*"},
        "keys": {"perTeam": {"enabled": True, "rotation": {"every": "3s", "overlap": "6s"}}},
    })
    await kube_rw.create(c.GROUP, group, {"displayName": f"Scheduled {namespace}"})
    secret_name = f"litellm-team-key-{group}"
    first = (await eventually(lambda: secret_data(kube_rw, secret_name), what="team key"))["api-key"]
    second = await eventually(key_other_than(kube_rw, secret_name, first), within=15, what="scheduled rotation")
    # The operator dies during the overlap: the pending deletion is in the Secret, not in memory.
    operator.kill()
    assert await admin.models_status(first) == 200
    start_operator(drift_interval="600")
    await eventually(_answers(admin, first, 401), within=20, what="retired key deleted by the new operator")
    assert await admin.models_status(second) in (200, 401)  # may itself be rotated and retired by now
    latest = (await secret_data(kube_rw, secret_name) or {})["api-key"]
    assert await admin.models_status(latest) == 200


async def test_a_group_deleted_while_its_key_rotates_every_second_leaves_no_working_key(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    """Deleting a group whose key rotates every second, with its policy edited at the same moment:
    afterwards no key of it works, none is left in LiteLLM, the team and the Secret are gone. (The
    narrower race, work already waiting for the group's lock when the deletion starts, is closed by
    construction in ``groups.delete``/``reconcile`` and ``group_keys.sync_keys``; from outside it is
    too short to hit reliably.)"""
    start_operator(drift_interval="600")
    group = ids("churn")
    spec = {"selector": {"displayNamePattern": "churn*"},
            "keys": {"perTeam": {"enabled": True, "rotation": {"every": "1s", "overlap": "1s"}}}}
    await put_policy(kube_rw, "churn", spec)
    await kube_rw.create(c.GROUP, group, {"displayName": f"Churn {namespace}"})
    secret_name = f"litellm-team-key-{group}"
    seen = [(await eventually(lambda: secret_data(kube_rw, secret_name), what="team key"))["api-key"]]
    for _ in range(2):  # rotating: the timetable runs the group's key check every second
        seen.append(await eventually(key_other_than(kube_rw, secret_name, seen[-1]), within=15, what="rotation"))

    await kube_rw.delete(c.GROUP, group)
    # The policy changes at the same moment: its re-reconcile of the group races the deletion.
    await put_policy(kube_rw, "churn", {**spec, "team": {"maxBudget": 3}})
    await eventually(lambda: _gone(kube_rw, group), within=30, what="group deleted")
    await asyncio.sleep(3)  # what waited for the group's lock has run by now

    assert await admin.team(group) is None, "the deleted group's team came back"
    status, listed = await admin.get("/key/list", team_id=group, return_full_object="true")
    assert status == 200 and listed.get("keys") == [], listed
    for key in seen:
        assert await admin.models_status(key) == 401
    assert await secret_data(kube_rw, secret_name) is None


async def _gone(kube: Kube, group: str) -> bool:
    return await kube.get(c.GROUP, group) is None
