"""Events are readable by anyone who may read the namespace: they name members by userName (or SCIM
id), never by email, and LiteLLM's own messages lose the addresses they quote."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


async def _messages(kube: Kube, name: str) -> list[str]:
    obj = await kube.get(c.USER, name) or await kube.get(c.GROUP, name) or {}
    conds = [str(x.get("message")) for x in (obj.get("status") or {}).get("conditions") or []]
    return [m for _, _, m in await kube.events(name)] + conds


async def test_events_name_members_by_username_not_email(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
) -> None:
    start_operator(drift_interval="1")
    ann, ben, twin, group = ids("ann"), ids("ben"), ids("twin"), ids("ops")
    emails = {ann: f"ann.private.{ann}@mail.example", ben: f"ben.private.{ben}@mail.example"}
    for user in (ann, ben):
        await kube_rw.create(c.USER, user, {"userName": f"login-{user}",
                                            "emails": [{"value": emails[user], "primary": True}]})
        await eventually(lambda u=user: admin.user(u), what=f"user {user}")  # type: ignore[misc]
    await kube_rw.create(c.GROUP, group, {"displayName": "Ops"})
    await kube_rw.set_members(group, [ann, ben])

    async def added() -> list[str] | None:
        found = [m for _, r, m in await kube_rw.events(group) if r == "MembersAdded"]
        return found if found and all(f"login-{u}" in " ".join(found) for u in (ann, ben)) else None

    await eventually(added, what="MembersAdded naming both members")
    # Drift both ways (a member dropped and an outsider added in the UI), and an email changed there.
    assert (await admin.post("/team/member_delete", {"team_id": group, "user_id": ann}))[0] == 200
    assert (await admin.post("/team/member_add", {"team_id": group, "member": [
        {"role": "user", "user_id": ben}]}))[0] in (200, 400)
    assert (await admin.post("/user/update", {"user_id": ben, "user_email": f"changed.{ben}@mail.example"}))[0] == 200

    async def corrected() -> bool:
        return sorted(await admin.members(group) or []) == sorted([ann, ben]) and (
            (await admin.user(ben)) or {}).get("user_email") == emails[ben]

    await eventually(corrected, within=20, what="drift corrected")
    await kube_rw.set_members(group, [ben])

    async def removed() -> list[str] | None:
        found = [m for _, r, m in await kube_rw.events(group) if r == "MembersRemoved"]
        return found or None

    assert f"login-{ann}" in " ".join(await eventually(removed, what="MembersRemoved"))
    # A second ScimUser with ben's email: LiteLLM refuses it, quoting the address.
    await kube_rw.create(c.USER, twin, {"userName": f"login-{twin}", "emails": [{"value": emails[ben]}]})

    async def refused() -> dict[str, object] | None:
        cond = await kube_rw.condition(c.USER, twin, "Synced")
        return cond if cond and cond["status"] == "False" else None

    await eventually(refused, within=20, what="duplicate email refused")
    text = " ".join([*await _messages(kube_rw, group), *await _messages(kube_rw, ann),
                     *await _messages(kube_rw, ben), *await _messages(kube_rw, twin)])
    assert f"member login-{ann} missing from team" in text
    for address in [*emails.values(), f"changed.{ben}@mail.example"]:
        assert address not in text
    assert "@mail.example" not in text
