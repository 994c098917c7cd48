"""The LiteLLM client: error shapes folded into one exception, idempotent membership calls, and
no master key in any message. The shapes are pinned from the real proxy, and the same cases run
against the real proxy below, so the parser cannot drift from what LiteLLM really sends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from litellm_scim import peers
from scim_contract import TeamSettings
from scim_contract.models import ObjectPermission
from scim_operator.litellm_api import LiteLLM, LiteLLMError, parse_error
from scim_operator.objects import (
    membership_differences,
    merged_metadata,
    ownership,
    set_condition,
    tagged_for,
    team_members,
)
from scim_operator.policies import listed_row_suffices, team_differences, team_fields


@pytest.mark.parametrize(
    ("status", "body", "message", "kind"),
    [
        (
            409,
            {
                "error": {
                    "message": "{'error': 'User with id u1 already exists'}",
                    "type": "internal_server_error",
                    "param": None,
                    "code": "409",
                }
            },
            "User with id u1 already exists",
            "internal_server_error",
        ),
        (
            400,
            {
                "error": {
                    "message": "All users are already in team.",
                    "type": "team_member_already_in_team",
                    "param": "member",
                    "code": "400",
                }
            },
            "All users are already in team.",
            "team_member_already_in_team",
        ),
        (400, {"detail": {"error": "User not found in team"}}, "User not found in team", None),
        (404, {"detail": "Not Found"}, "Not Found", None),
        (
            422,
            {
                "detail": [
                    {
                        "type": "string_type",
                        "loc": ["body", "user_id"],
                        "msg": "Input should be a valid string",
                    }
                ]
            },
            "user_id: Input should be a valid string",
            "validation_error",
        ),
        (502, "<html>Bad gateway</html>", "<html>Bad gateway</html>", None),
        (500, None, "HTTP 500", None),
    ],
)
def test_every_error_shape_becomes_one_exception(
    status: int, body: object, message: str, kind: str | None
) -> None:
    err = parse_error(status, body, endpoint="/x")
    assert (err.status, err.message, err.kind) == (status, message, kind)
    assert str(err) == f"/x: {message} (HTTP {status})"
    assert err.transient == (status >= 500)


def test_ownership_and_metadata_merge() -> None:
    assert ownership({"owner": "ns/a"}, "owner", "ns", "a") == "owned"
    assert ownership({"owner": "other/a"}, "owner", "ns", "a") == "foreign"
    assert ownership({}, "owner", "ns", "a") == "untagged"
    assert ownership(None, "owner", "ns", "a") == "untagged"
    assert merged_metadata({"keep": 1, "owner": "x"}, "owner", "ns", "a") == {"keep": 1, "owner": "ns/a"}


def test_membership_differences_are_minimal() -> None:
    adds, removes = membership_differences({"a": "a", "b": "b"}, {"b": "b", "c": "c"})
    assert (adds, removes) == (["a"], ["c"])


def test_condition_transition_time_moves_only_with_the_status() -> None:
    first = set_condition(None, "Synced", True, "Synced", "ok", 1)
    stamp = first[0]["lastTransitionTime"]
    same = set_condition(
        [{**first[0], "lastTransitionTime": "2000-01-01T00:00:00Z"}], "Synced", True, "Synced", "still ok", 2
    )
    assert same[0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Synced", False, "LiteLLMUnavailable", "down", 2)
    assert flipped[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    assert stamp


@pytest.fixture
async def api(litellm: peers.LiteLLM) -> AsyncIterator[LiteLLM]:
    client = LiteLLM(litellm.url, SecretStr(litellm.master_key), timeout=10, concurrency=4)
    yield client
    await client.close()


@pytest.mark.litellm
async def test_real_proxy_errors_parse_as_pinned(api: LiteLLM, litellm: peers.LiteLLM) -> None:
    uid = f"api-{uuid.uuid4().hex[:8]}"
    await api.user_new({"user_id": uid, "user_email": f"{uid}@example.com"})
    with pytest.raises(LiteLLMError) as dup:
        await api.user_new({"user_id": uid})
    assert (dup.value.status, dup.value.message) == (409, f"User with id {uid} already exists")
    with pytest.raises(LiteLLMError) as invalid:
        await api.call("POST", "/user/new", body={"user_id": 5})
    assert invalid.value.status == 422
    assert invalid.value.message == "user_id: Input should be a valid string"
    assert await api.user_info(f"missing-{uid}") is None
    assert await api.team_info(f"missing-{uid}") is None

    team = f"team-{uid}"
    await api.team_new({"team_id": team, "team_alias": "API test"})
    await api.member_add(team, [uid])
    await api.member_add(team, [uid])  # already a member: success
    await api.member_delete(team, uid)
    await api.member_delete(team, uid)  # not a member: success
    info = await api.team_info(team)
    assert info is not None and info["members_with_roles"] == []
    assert await api.team_delete(team) is True
    assert await api.user_delete(uid) is True
    assert await api.user_delete(uid) is False


@pytest.mark.litellm
async def test_the_client_knows_which_teams_it_wrote_since_a_moment(api: LiteLLM) -> None:
    uid = f"api-{uuid.uuid4().hex[:8]}"
    team, other = f"team-{uid}", f"other-{uid}"
    await api.user_new({"user_id": uid})
    await api.team_new({"team_id": team, "team_alias": "Written"})
    before = time.monotonic()
    assert not api.written_since(team, before) and not api.written_since(other, 0.0)
    await api.member_add(team, [uid])
    assert api.written_since(team, before) and not api.written_since(team, time.monotonic())
    await api.team_row(team)  # a read is no write
    after = time.monotonic()
    assert not api.written_since(team, after)
    assert await api.team_delete(team) is True
    assert api.written_since(team, after)
    assert await api.user_delete(uid) is True


@pytest.mark.litellm
async def test_wrong_master_key_is_reported_without_any_key(litellm: peers.LiteLLM) -> None:
    secret = "sk-wrong-" + uuid.uuid4().hex
    client = LiteLLM(litellm.url, SecretStr(secret), timeout=10)
    try:
        with pytest.raises(LiteLLMError) as err:
            await client.user_info("anyone")
    finally:
        await client.close()
    assert err.value.status == 401
    assert secret not in str(err.value) and secret not in repr(err.value) and secret not in repr(client)
    assert litellm.master_key not in str(err.value)


async def test_unreachable_proxy_is_a_transient_error() -> None:
    client = LiteLLM(f"http://127.0.0.1:{peers.free_port()}", SecretStr("sk-x"), timeout=2)
    try:
        with pytest.raises(LiteLLMError) as err:
            await client.team_info("t")
    finally:
        await client.close()
    assert err.value.status == 0 and err.value.transient
    assert "LiteLLM unreachable" in str(err.value)


@pytest.mark.litellm
async def test_members_chosen_by_a_function_are_read_when_the_call_gets_its_slot(api: LiteLLM) -> None:
    """A team's addition that queues behind others takes the members that became ready meanwhile."""
    uids = [f"api-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for uid in uids:
        await api.user_new({"user_id": uid})
    team = f"team-{uids[0]}"
    await api.team_new({"team_id": team})
    ready = [uids[0]]
    # Every membership slot busy (as during a bulk provisioning): the call below has to queue.
    slots = api._member_limit
    held = 0
    while not slots.locked():
        await slots.acquire()
        held += 1
    queued = asyncio.create_task(api.member_add(team, lambda: list(ready)))
    await asyncio.sleep(0.05)
    ready += uids[1:]  # became ready while the call waited
    for _ in range(held):
        slots.release()
    await queued

    info = await api.team_info(team)
    assert info is not None
    assert sorted(m["user_id"] for m in info["members_with_roles"]) == sorted(uids)
    assert await api.team_delete(team) is True
    for uid in uids:
        await api.user_delete(uid)


@pytest.mark.litellm
async def test_a_listed_team_row_compares_like_team_info_except_the_joined_tables(api: LiteLLM) -> None:
    """What lets a restart read its teams in pages (``team_reads``) and a drift check read one row:
    a row of ``/v2/team/list`` gives the same comparison as ``/team/info`` for every setting except
    the two joined tables, for which ``listed_row_suffices`` sends the group to ``/team/info``."""
    uid = f"api-{uuid.uuid4().hex[:8]}"
    team = f"team-{uid}"
    plain = TeamSettings(models=["gpt-4o"], maxBudget=5, budgetDuration="30d", tpmLimit=100, rpmLimit=10,
                         blocked=False, metadata={"cost-center": "42"})
    joined = plain.model_copy(update={"maxBudgetPerMember": 2.0, "memberBudgetDuration": "7d",
                                      "objectPermission": ObjectPermission(vectorStores=["docs-vs"])})
    await api.user_new({"user_id": uid})
    await api.team_new({"team_id": team, "team_alias": "Listed", **team_fields(joined),
                        "metadata": merged_metadata(joined.metadata, "owner", "ns", "g")})
    await api.member_add(team, [uid])
    info = await api.team_info(team)
    assert info is not None and team_differences(joined, info) == []

    row, number = None, 1
    while row is None:
        rows, total = await api.team_page(number)
        assert rows or number > 1, "the first page is empty though a team exists"
        ids = [r["team_id"] for r in rows]
        assert ids == sorted(ids)  # team_id order: pages line up with the groups' names
        row = next((r for r in rows if r["team_id"] == team), None)
        assert row is not None or number * 100 < total, f"{team} not listed"
        number += 1
    assert tagged_for(row["metadata"], "owner", "ns") and not tagged_for(row["metadata"], "owner", "n")
    assert (row["team_alias"], row["metadata"]) == (info["team_alias"], info["metadata"])
    assert team_members(row) == team_members(info) == {uid: uid}
    assert [(m["user_id"], m["role"]) for m in row["members_with_roles"]] == [(uid, "user")]
    assert listed_row_suffices(plain) and team_differences(plain, row) == []
    # One team's row alone, as a group's drift check reads it.
    alone = await api.team_row(team)
    assert alone is not None and team_members(alone) == team_members(info)
    assert (alone["team_alias"], alone["metadata"]) == (info["team_alias"], info["metadata"])
    assert team_differences(plain, alone) == [] and await api.team_row(f"missing-{uid}") is None
    # The joined tables are missing from the row: compared with it, they would look changed.
    assert not listed_row_suffices(joined) and team_differences(joined, row) != []
    assert await api.team_delete(team) is True
    await api.user_delete(uid)
