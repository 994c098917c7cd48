"""An operator restart on resources it already converged: LiteLLM is left alone, against real peers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

CALLS = "litellm_scim_operator_litellm_calls_total"
READS = {"/user/info", "/team/info", "/key/list", "/v2/team/list", "/v2/team/list?team_id"}


def calls(operator: OperatorProcess) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in operator.metrics().splitlines():
        if line.startswith(CALLS + "{"):
            endpoint = line.split('endpoint="')[1].split('"')[0]
            out[endpoint] = out.get(endpoint, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


async def _all_synced(kube_rw: Kube, kind: c.ResourceKind, names: list[str]) -> list[dict[str, Any]] | None:
    objs = [await kube_rw.get(kind, n) for n in names]
    for obj in objs:
        conds = ((obj or {}).get("status") or {}).get("conditions") or []
        if not any(x["type"] == "Synced" and x["status"] == "True" for x in conds):
            return None
        if obj and obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            return None
    return [o for o in objs if o is not None]


async def test_restart_on_converged_resources_makes_no_litellm_write_and_one_read_per_team(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    users = [ids(f"r{i:02d}") for i in range(30)]
    # As many groups as a restart lists the teams for (team_reads.MIN_GROUPS), 3 members each.
    groups = [ids(f"rg{j}") for j in range(10)]
    for name in users:
        await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com", "displayName": name.upper()})
    await kube_rw.patch_spec(c.USER, users[0], {"active": False})
    for j, group in enumerate(groups):
        await kube_rw.create(c.GROUP, group, {"displayName": f"Restart {j}"})
        await kube_rw.set_members(group, users[j * 3:(j + 1) * 3])

    first = start_operator(drift_interval="600")
    await eventually(lambda: _all_synced(kube_rw, c.USER, users), within=120, what="users synced")
    for j, group in enumerate(groups):
        want = sorted(users[j * 3:(j + 1) * 3])
        await eventually(lambda g=group, w=want: _members(admin, g, w), within=60,  # type: ignore[misc]
                         what=f"{group} members")
    await eventually(lambda: _all_synced(kube_rw, c.GROUP, groups), within=60, what="groups synced")
    first.stop()
    before = {n: (await kube_rw.get(c.USER, n) or {})["metadata"]["resourceVersion"] for n in users}
    groups_before = {g: (await kube_rw.get(c.GROUP, g) or {})["metadata"]["resourceVersion"] for g in groups}

    status, page = await admin.get("/v2/team/list", page="1", page_size="1")
    assert status == 200, page
    listed = page["total"] <= 100 * len(groups)  # else listing would cost more calls than it saves

    second = start_operator(drift_interval="600")

    async def groups_resumed() -> float | None:
        done = metric_sum(second.metrics(), "litellm_scim_operator_reconciles_total", kind="group")
        return done if done >= len(groups) else None

    await eventually(groups_resumed, within=60, what="every group resumed")
    made = calls(second)
    assert {e for e in made if e not in READS} == set(), f"a restart on converged resources wrote: {made}"
    assert made.get("/team/info", 0) + made.get("/v2/team/list", 0) + made.get("/v2/team/list?team_id", 0) \
        <= len(groups) + 1, made
    if listed:  # every team came from pages of 100 (team_reads), none from a read of its own
        assert made.get("/team/info", 0) == 0 and made["/v2/team/list"] == -(-page["total"] // 100), made
    assert made.get("/user/info", 0) == 0, made
    # Nothing to record either: no status was rewritten.
    after = {n: (await kube_rw.get(c.USER, n) or {})["metadata"]["resourceVersion"] for n in users}
    assert after == before
    groups_after = {g: (await kube_rw.get(c.GROUP, g) or {})["metadata"]["resourceVersion"] for g in groups}
    assert groups_after == groups_before
    second.stop()

    # What changed while no operator ran is still applied by the next one.
    await kube_rw.patch_spec(c.USER, users[1], {"displayName": "Renamed While Down"})
    start_operator(drift_interval="600")

    async def renamed() -> dict[str, Any] | None:
        user = await admin.user(users[1])
        return user if user and user["user_alias"] == "Renamed While Down" else None

    await eventually(renamed, within=60, what="the change made while down applied")


async def _aliases(admin: Admin, teams: list[str]) -> list[str]:
    return [(await admin.team(t) or {}).get("team_alias", "") for t in teams]


async def test_group_drift_checks_follow_the_pages_of_teams_and_correct_every_team(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    # As many groups as the drift pass reads the teams in pages for (team_reads.MIN_GROUPS).
    groups = [ids(f"dg{j}") for j in range(10)]
    for j, group in enumerate(groups):
        await kube_rw.create(c.GROUP, group, {"displayName": f"Drift {j}"})
    operator = start_operator(drift_interval="3")
    synced = await eventually(lambda: _all_synced(kube_rw, c.GROUP, groups), within=60, what="groups synced")
    teams = [o["status"]["litellm"]["teamId"] for o in synced]
    status, page = await admin.get("/v2/team/list", page="1", page_size="1")
    assert status == 200, page
    paged = page["total"] <= 100 * len(groups)
    before = calls(operator)

    # Every team renamed by hand: some are compared from a page's rows, the others read one by one.
    for team in teams:
        assert (await admin.post("/team/update", {"team_id": team, "team_alias": "Renamed by hand"}))[0] == 200

    async def restored() -> list[str] | None:
        aliases = await _aliases(admin, teams)
        return aliases if aliases == [f"Drift {j}" for j in range(len(groups))] else None

    await eventually(restored, within=30, what="every team's alias corrected by the drift checks")
    for group in groups:
        cond = await kube_rw.condition(c.GROUP, group, "Drifted")
        assert cond is not None and cond["reason"] == "Corrected" and "Renamed by hand" in cond["message"], cond
    made = calls(operator)
    if paged:  # the passes read pages of teams; rows only for checks a page no longer serves fresh
        assert made.get("/v2/team/list", 0) > before.get("/v2/team/list", 0), made
    else:  # LiteLLM holds too many teams for pages to pay: each check reads its team's row
        assert made.get("/v2/team/list", 0) == before.get("/v2/team/list", 0), made
        assert made.get("/v2/team/list?team_id", 0) >= before.get("/v2/team/list?team_id", 0) + len(groups), made


async def _members(admin: Admin, team: str, expected: list[str]) -> list[str] | None:
    members = await admin.members(team)
    return members if members == sorted(expected) else None


async def test_kopf_index_waiters_wake_once_every_object_is_indexed_and_not_before() -> None:
    """The start-up wait of quiet_toggle_sets: objects waiting for the indexes go on exactly when the
    last toggle is dropped, and a peering pause (an ``any`` set) still stops and releases them."""
    from kopf._cogs.aiokits import aiotoggles

    from scim_operator.kopf_patches import quiet_toggle_sets

    quiet_toggle_sets()
    indexed = aiotoggles.ToggleSet(all)
    kinds = [await indexed.make_toggle(name=f"kind{i}") for i in range(2)]
    objects = [await indexed.make_toggle(name=f"obj{i}") for i in range(50)]
    waiters = [asyncio.create_task(indexed.wait_for(True)) for _ in range(20)]
    for toggle in objects:
        await indexed.drop_toggle(toggle)
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    await indexed.drop_toggles(kinds)
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)

    paused = aiotoggles.ToggleSet(any)
    running = asyncio.create_task(paused.wait_for(False))
    await asyncio.sleep(0)
    assert running.done()  # nothing pauses: not paused
    peer = await paused.make_toggle(True, name="peer")
    resumed = asyncio.create_task(paused.wait_for(False))
    await asyncio.sleep(0.01)
    assert not resumed.done()
    await paused.drop_toggle(peer)
    await asyncio.wait_for(resumed, 1.0)
