"""After a membership call failed, the operator compares the team again once things are quiet and
re-adds what LiteLLM lost: also for a group whose policy chooses its team id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy

import scim_contract as c
from litellm_scim import peers

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


class LosingLiteLLM:
    """An HTTP proxy in front of LiteLLM whose first /team/member_add fails with LiteLLM's
    transaction-timeout 500 and whose second is answered 200 without reaching LiteLLM: a list lost
    although the call succeeded, as seen under load."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.member_adds: list[list[str]] = []
        self.port = peers.free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/team/member_add":
            self.member_adds.append(sorted(m["user_id"] for m in json.loads(body)["member"]))
            if len(self.member_adds) == 1:
                return web.json_response(
                    {"error": {"message": "Transaction already closed", "type": "internal_error", "code": "500"}},
                    status=500)
            if len(self.member_adds) == 2:
                return web.json_response({"team_id": json.loads(body)["team_id"]})
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._session.request(request.method, self.target + request.path_qs, headers=headers,
                                         data=body) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type=resp.content_type)


@pytest.fixture
async def losing(litellm: peers.LiteLLM) -> AsyncIterator[LosingLiteLLM]:
    proxy = LosingLiteLLM(litellm.url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_members_lost_after_a_failed_call_are_re_added_in_the_team_the_policy_names(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str, losing: LosingLiteLLM,
) -> None:
    # The operator names teams after the group; the policy names this group's team by externalId.
    start_operator(litellm_url=losing.url, team_id_strategy="name", drift_interval="600")
    await put_policy(kube_rw, "by-external-id", {
        "selector": {"displayNamePattern": f"verify-{namespace}"}, "teamIdStrategy": "externalId"})
    first, second, group, team = ids("amy"), ids("bob"), ids("verify"), ids("ext-verify")
    for user in (first, second):
        await kube_rw.create(c.USER, user, {"userName": user})
    for user in (first, second):
        await eventually(lambda u=user: admin.user(u), what=f"user {user}")  # type: ignore[misc]
    # Members first, then the group: its own reconcile adds both in one call.
    await kube_rw.set_members(group, [first, second])
    await asyncio.sleep(1.0)  # the operator's shard index has the members before the group appears
    await kube_rw.create(c.GROUP, group, {"displayName": f"verify-{namespace}", "externalId": team})

    async def repaired() -> list[tuple[str, str, str]]:
        return [e for e in await kube_rw.events(group) if e[1] == "MembersRepaired"]

    events = await eventually(repaired, within=30, what="MembersRepaired Event")
    assert team in events[0][2]
    # One call with both, split in halves after the 500; the first half was lost.
    assert losing.member_adds[0] == sorted([first, second])
    assert sorted(losing.member_adds[1] + losing.member_adds[2]) == sorted([first, second])

    async def members() -> list[str] | None:
        found = await admin.members(team)
        return found if found == sorted([first, second]) else None

    await eventually(members, within=10, what="both members in the policy's team")
    assert await admin.team(group) is None  # nothing went to a team named after the group
