"""ScimGroup + ScimMemberShards -> LiteLLM team and members; drift, against real peers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


def _members_are(admin: Admin, team_id: str, expected: list[str]) -> Callable[[], object]:
    async def probe() -> list[str] | None:
        members = await admin.members(team_id)
        return members if members == sorted(expected) else None

    return probe


async def _make_users(kube_rw: Kube, admin: Admin, names: list[str]) -> None:
    for name in names:
        await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com"})
    for name in names:
        await eventually(lambda n=name: admin.user(n), what=f"user {name}")  # type: ignore[misc]


async def test_membership_follows_shards_and_users_that_appear_later(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    operator = start_operator(drift_interval="600")  # only the change handlers act in this test
    a, b, late, group = ids("ann"), ids("ben"), ids("lea"), ids("eng")
    await _make_users(kube_rw, admin, [a, b])
    await kube_rw.create(c.GROUP, group, {"displayName": f"Engineering {namespace}"})
    await kube_rw.set_members(group, [a], nested=[ids("subgroup")])

    await eventually(_members_are(admin, group, [a]), what="team with the first member")
    team = await admin.team(group)
    assert team is not None
    assert team["team_alias"] == f"Engineering {namespace}"
    assert team["metadata"]["litellm-scim-operator"] == f"{namespace}/{group}"
    roles = {m["user_id"]: m["role"] for m in team["members_with_roles"]}
    assert roles == {a: "user"}

    # One member added: exactly one /team/member_add call, no full listing of the team.
    before = operator.metrics()
    await kube_rw.set_members(group, [a, b], nested=[ids("subgroup")])
    await eventually(_members_are(admin, group, [a, b]), what="second member added")
    after = operator.metrics()
    name = "litellm_scim_operator_litellm_calls_total"
    assert metric_sum(after, name, endpoint="/team/member_add") - metric_sum(before, name,
                                                                             endpoint="/team/member_add") == 1
    assert metric_sum(after, name, endpoint="/team/info") == metric_sum(before, name, endpoint="/team/info")

    # A member whose ScimUser does not exist yet joins when the user appears.
    await kube_rw.set_members(group, [a, b, late], nested=[ids("subgroup")])
    await kube_rw.create(c.USER, late, {"userName": f"{late}@example.com"})
    await eventually(_members_are(admin, group, [a, b, late]), what="late user joined the team")

    # Removal.
    await kube_rw.set_members(group, [b, late])
    await eventually(_members_are(admin, group, [b, late]), what="member removed")
    events = await kube_rw.events(group)
    assert any(r == "MembersRemoved" and a in m for _, r, m in events)

    async def status_counts() -> dict[str, object] | None:
        obj = await kube_rw.get(c.GROUP, group)
        st = (obj or {}).get("status") or {}
        return st if st.get("members") == 2 and (st.get("litellm") or {}).get("members") == 2 else None

    st = await eventually(status_counts, what="member counts in status")
    assert st["litellm"]["teamId"] == group  # type: ignore[index]
    await eventually(_groups_count_is(kube_rw, b, 1), what="status.groups of a member")

    # Deleting the group deletes the team (deletion policy "delete").
    await kube_rw.delete(c.GROUP, group)
    await eventually(lambda: _team_gone(admin, group), what="team deleted")


def _groups_count_is(kube_rw: Kube, user: str, expected: int) -> Callable[[], object]:
    async def probe() -> bool:
        obj = await kube_rw.get(c.USER, user)
        return ((obj or {}).get("status") or {}).get("groups") == expected

    return probe


async def test_users_synced_before_their_group_show_the_group_in_status(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    """An IdP pushes users first, groups later: the GROUPS column of those users must not stay at 0."""
    start_operator(drift_interval="600")  # no drift timer to refresh the count by accident
    a, b, group = ids("uma"), ids("ugo"), ids("ops")
    await _make_users(kube_rw, admin, [a, b])
    for user in (a, b):
        await eventually(_groups_count_is(kube_rw, user, 0), what=f"{user} synced with no group")
    await kube_rw.create(c.GROUP, group, {"displayName": f"Ops {namespace}"})
    await kube_rw.set_members(group, [a, b])
    await eventually(_members_are(admin, group, [a, b]), what="team with both members")
    for user in (a, b):
        await eventually(_groups_count_is(kube_rw, user, 1), what=f"status.groups of {user}")


async def _team_gone(admin: Admin, team_id: str) -> bool:
    return await admin.team(team_id) is None


async def test_drift_in_litellm_is_reported_and_corrected(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    operator = start_operator(drift_interval="1")
    a, b, group = ids("dan"), ids("eve"), ids("ops")
    await _make_users(kube_rw, admin, [a, b])
    await kube_rw.create(c.GROUP, group, {"displayName": "Operations"})
    await kube_rw.set_members(group, [a, b])
    await eventually(_members_are(admin, group, [a, b]), what="team members")

    # Someone edits the team in the LiteLLM UI: removes a member, renames it.
    status, _ = await admin.post("/team/member_delete", {"team_id": group, "user_id": a})
    assert status == 200
    status, _ = await admin.post("/team/update", {"team_id": group, "team_alias": "Renamed in UI"})
    assert status == 200

    async def corrected() -> bool:
        team = await admin.team(group)
        return bool(team and team["team_alias"] == "Operations"
                    and sorted(m["user_id"] for m in team["members_with_roles"]) == sorted([a, b]))

    await eventually(corrected, what="drift corrected")
    events = await eventually(lambda: _drift_events(kube_rw, group), what="drift events")
    detected = " ".join(m for _, r, m in events if r == "DriftDetected")
    assert f"member {a}@example.com missing from team" in detected
    assert "team alias is 'Renamed in UI', expected 'Operations'" in detected
    assert any(r == "DriftCorrected" for _, r, _ in events)
    text = operator.metrics()
    assert metric_sum(text, "litellm_scim_operator_drift_found_total", kind="team") >= 2
    assert metric_sum(text, "litellm_scim_operator_drift_corrected_total", kind="team") >= 2
    assert metric_sum(text, "litellm_scim_operator_managed_objects", kind="user") == 2

    # A user deleted behind our back comes back, too.
    status, _ = await admin.post("/user/delete", {"user_ids": [b]})
    assert status == 200
    await eventually(lambda: admin.user(b), what="user recreated")


async def _drift_events(kube_rw: Kube, name: str) -> list[tuple[str, str, str]] | None:
    events = await kube_rw.events(name)
    reasons = {r for _, r, _ in events}
    return events if {"DriftDetected", "DriftCorrected"} <= reasons else None


async def test_report_only_drift_policy_leaves_litellm_alone(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    start_operator(drift_interval="1", drift_policy="report")
    a, b, group = ids("fay"), ids("gus"), ids("qa")
    await _make_users(kube_rw, admin, [a, b])
    await kube_rw.create(c.GROUP, group, {"displayName": "QA"})
    await kube_rw.set_members(group, [a, b])
    await eventually(_members_are(admin, group, [a, b]), what="team members")

    await admin.post("/team/member_delete", {"team_id": group, "user_id": b})

    async def drifted() -> dict[str, object] | None:
        cond = await kube_rw.condition(c.GROUP, group, "Drifted")
        return cond if cond and cond["status"] == "True" else None

    cond = await eventually(drifted, what="Drifted=True")
    assert cond["reason"] == "DriftDetected"
    assert cond["message"] == f"member {b}@example.com missing from team"
    assert await admin.members(group) == [a]  # reported, not corrected
    assert any(r == "DriftDetected" for _, r, _ in await kube_rw.events(group))
