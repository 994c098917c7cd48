"""A group's externalId is chosen by whoever holds a SCIM token. Under the externalId team strategy
it names the LiteLLM team: it must not let a token holder take over a team in use, nor sync into
another group's team."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

TAG = "litellm-scim-operator"


def _not_synced(kube: Kube, group: str) -> Callable[[], Any]:
    async def probe() -> dict[str, Any] | None:
        cond = await kube.condition(c.GROUP, group, "Synced")
        return cond if cond and cond["status"] == "False" else None

    return probe


async def test_adopt_takes_over_only_an_unused_team_named_by_external_id(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    start_operator(adopt="", team_id_strategy="externalId")
    # A team in use, made in LiteLLM by hand: a member and a key.
    busy, empty, owner = ids("finance-team"), ids("fresh-team"), ids("cfo")
    assert (await admin.post("/user/new", {"user_id": owner, "auto_create_key": False}))[0] == 200
    assert (await admin.post("/team/new", {"team_id": busy, "team_alias": "Finance", "max_budget": 1000}))[0] == 200
    assert (await admin.post("/team/member_add", {"team_id": busy, "member": [
        {"role": "user", "user_id": owner}]}))[0] == 200
    status, key = await admin.post("/key/generate", {"team_id": busy, "key_alias": f"finance-{busy}"})
    assert status == 200
    assert (await admin.post("/team/new", {"team_id": empty, "team_alias": "Fresh"}))[0] == 200

    # A token holder names the busy team: refused, the team stays as it was.
    thief, adopter = ids("thief"), ids("adopter")
    await kube_rw.create(c.GROUP, thief, {"displayName": "Anything", "externalId": busy})
    cond = await eventually(_not_synced(kube_rw, thief), what="takeover refused")
    assert cond["reason"] == "NotOwned" and "1 member(s)" in cond["message"] and "1 key(s)" in cond["message"]
    assert any(t == "Warning" and r == "NotOwned" for t, r, _ in await kube_rw.events(thief))
    team = await admin.team(busy)
    assert team is not None and team["team_alias"] == "Finance" and TAG not in (team.get("metadata") or {})
    assert await admin.members(busy) == [owner]
    assert await admin.models_status(key["key"]) == 200

    # An unused team is adopted as before.
    await kube_rw.create(c.GROUP, adopter, {"displayName": "Fresh group", "externalId": empty})

    async def adopted() -> dict[str, Any] | None:
        team = await admin.team(empty)
        return team if team and TAG in (team.get("metadata") or {}) else None

    assert (await eventually(adopted, what="empty team adopted"))["team_alias"] == "Fresh group"


async def test_second_group_with_the_same_team_id_does_not_sync_into_it(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(team_id_strategy="externalId")
    first, second, user, external = ids("first"), ids("second"), ids("member"), ids("shared-ext")
    await kube_rw.create(c.USER, user, {"userName": user})
    await eventually(lambda: admin.user(user), what="user")
    await kube_rw.create(c.GROUP, first, {"displayName": "First", "externalId": external})

    async def owned() -> dict[str, Any] | None:
        team = await admin.team(external)
        return team if team and (team.get("metadata") or {}).get(TAG) == f"{namespace}/{first}" else None

    await eventually(owned, what="team of the first group")
    await kube_rw.create(c.GROUP, second, {"displayName": "Second", "externalId": external})
    await kube_rw.set_members(second, [user])
    cond = await eventually(_not_synced(kube_rw, second), what="second group refused")
    assert cond["reason"] == "NotOwned" and f"{namespace}/{first}" in cond["message"]
    assert any(t == "Warning" and r == "NotOwned" for t, r, _ in await kube_rw.events(second))
    team = await admin.team(external)
    assert team is not None and team["team_alias"] == "First"
    assert await admin.members(external) == []
