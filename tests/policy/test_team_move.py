"""A group whose team id changes (a new externalId under the externalId strategy) takes what the
operator gave it out of the old team: its members and keys move to the new team, and the old team
is deleted or, with deletionPolicy keep, left without them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy, secret_data

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed where these tests' policies deliver them."""
    return [namespace]


async def _team_of(admin: Admin, key: str) -> str | None:
    status, data = await admin.get("/key/info", key=key)
    return str(data["info"].get("team_id")) if status == 200 else None


def _moved_key(kube: Kube, admin: Admin, name: str, old: str, team: str) -> Callable[[], Any]:
    async def probe() -> str | None:
        data = await secret_data(kube, name)
        if not data or data["api-key"] == old:
            return None
        return data["api-key"] if await _team_of(admin, data["api-key"]) == team else None

    return probe


async def test_changed_external_id_moves_members_and_keys(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(team_id_strategy="externalId", drift_interval="600")
    await put_policy(kube_rw, "move-keep", {
        "selector": {"displayNamePattern": "keep-*"}, "deletionPolicy": "keep",
        "keys": {"perMember": {"enabled": True}, "perTeam": {"enabled": True}}})
    await put_policy(kube_rw, "move-delete", {
        "selector": {"displayNamePattern": "drop-*"}, "keys": {"perTeam": {"enabled": True}}})
    user = ids("ann")
    await kube_rw.create(c.USER, user, {"userName": user})
    await eventually(lambda: admin.user(user), what="user")
    keep, drop = ids("keep"), ids("drop")
    old = {keep: ids("ext-keep-1"), drop: ids("ext-drop-1")}
    new = {keep: ids("ext-keep-2"), drop: ids("ext-drop-2")}
    await kube_rw.create(c.GROUP, keep, {"displayName": f"keep-{namespace}", "externalId": old[keep]})
    await kube_rw.create(c.GROUP, drop, {"displayName": f"drop-{namespace}", "externalId": old[drop]})
    for group in (keep, drop):
        await kube_rw.set_members(group, [user])
    secrets = {keep: [f"litellm-team-key-{keep}", f"litellm-key-{keep}-{user}"], drop: [f"litellm-team-key-{drop}"]}
    before: dict[str, str] = {}
    for group, names in secrets.items():
        for name in names:
            before[name] = await eventually(_moved_key(kube_rw, admin, name, "", old[group]), what=f"key {name}")
        assert await admin.members(old[group]) == [user]

    for group in (keep, drop):
        await kube_rw.patch_spec(c.GROUP, group, {"externalId": new[group]})
    for group, names in secrets.items():
        for name in names:
            key = await eventually(_moved_key(kube_rw, admin, name, before[name], new[group]), within=20,
                                   what=f"{name} reissued in the new team")
            assert await admin.models_status(key) == 200
            assert await admin.models_status(before[name]) == 401, f"old key of {name} still works"
        assert await eventually(lambda g=group: _members(admin, new[g])) == [user]  # type: ignore[misc]

    # deletionPolicy keep: the old team stays, without the group's member; delete: it is gone.
    assert await admin.team(old[keep]) is not None
    assert await admin.members(old[keep]) == []
    assert await admin.team(old[drop]) is None
    for group in (keep, drop):
        obj = await kube_rw.get(c.GROUP, group)
        assert obj is not None and obj["status"]["litellm"]["teamId"] == new[group]
        moved = [m for _, r, m in await kube_rw.events(group) if r == "TeamChanged"]
        assert moved and old[group] in moved[0] and new[group] in moved[0]


async def _members(admin: Admin, team: str) -> list[str] | None:
    return await admin.members(team) or None


async def test_policy_strategy_change_moves_the_group(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    spec: dict[str, Any] = {"selector": {"displayNamePattern": "strategy-*"}, "teamIdStrategy": "name",
                            "keys": {"perTeam": {"enabled": True}}}
    await put_policy(kube_rw, "move-strategy", spec)
    user, group, external = ids("ann"), ids("grp"), ids("ext-grp")
    await kube_rw.create(c.USER, user, {"userName": user})
    await eventually(lambda: admin.user(user), what="user")
    await kube_rw.create(c.GROUP, group, {"displayName": f"strategy-{namespace}", "externalId": external})
    await kube_rw.set_members(group, [user])
    name = f"litellm-team-key-{group}"
    old_key = await eventually(_moved_key(kube_rw, admin, name, "", group), what="team key in the named team")
    assert await eventually(lambda: _members(admin, group)) == [user]

    await put_policy(kube_rw, "move-strategy", {**spec, "teamIdStrategy": "externalId"})
    new_key = await eventually(_moved_key(kube_rw, admin, name, old_key, external), within=20,
                               what="team key reissued in the externalId team")
    assert await admin.models_status(new_key) == 200
    assert await admin.models_status(old_key) == 401
    assert await eventually(lambda: _members(admin, external)) == [user]
    assert await admin.team(group) is None  # owned by the group, deletion policy delete
