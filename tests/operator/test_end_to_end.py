"""End to end: SCIM requests into ``litellm-scim endpoint`` -> custom resources -> ``litellm-scim
operator`` -> LiteLLM, with both processes real and only the SCIM API and LiteLLM observed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, OperatorProcess, eventually

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def test_scim_user_and_group_reach_litellm(
    scim: Callable[..., Any],
    start_operator: Callable[..., OperatorProcess],
    admin: Admin,
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    suffix = namespace
    status, alice = await scim(
        "POST",
        "/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"alice-{suffix}@example.com",
            "displayName": "Alice",
            "active": True,
            "emails": [{"value": f"alice-{suffix}@example.com", "type": "work", "primary": True}],
        },
    )
    assert status == 201, alice
    status, bob = await scim(
        "POST",
        "/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"bob-{suffix}@example.com",
        },
    )
    assert status == 201, bob
    status, group = await scim(
        "POST",
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": f"Research {suffix}",
            "members": [{"value": alice["id"]}, {"value": bob["id"]}],
        },
    )
    assert status == 201, group

    async def team_members(expected: list[str]) -> list[str] | None:
        members = await admin.members(group["id"])
        return members if members == sorted(expected) else None

    await eventually(lambda: team_members([alice["id"], bob["id"]]), what="team with both members")
    user = await admin.user(alice["id"])
    assert user is not None
    assert (user["user_email"], user["user_alias"]) == (f"alice-{suffix}@example.com", "Alice")
    team = await admin.team(group["id"])
    assert team is not None and team["team_alias"] == f"Research {suffix}"

    # Entra removes a member, then disables the user: the member leaves, the user's key stops working.
    status, _ = await scim(
        "PATCH",
        f"/Groups/{group['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "Remove", "path": f'members[value eq "{bob["id"]}"]'}]},
    )
    assert status in (200, 204)
    await eventually(lambda: team_members([alice["id"]]), what="member removed")

    _, key = await admin.post("/key/generate", {"user_id": alice["id"]})
    assert await admin.models_status(key["key"]) == 200
    status, _ = await scim(
        "PATCH",
        f"/Users/{alice['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
    )
    assert status in (200, 204)

    async def refused() -> int | None:
        code = await admin.models_status(key["key"])
        return code if code == 401 else None

    await eventually(refused, what="disabled user's key refused")

    status, _ = await scim("DELETE", f"/Users/{bob['id']}")
    assert status == 204

    async def bob_gone() -> bool:
        return await admin.user(bob["id"]) is None

    await eventually(bob_gone, what="deleted user gone from LiteLLM")
