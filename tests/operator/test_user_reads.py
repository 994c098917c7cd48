"""Drift reads of LiteLLM users gathered into /user/list calls: the batching itself with a stand-in
fetch, and the batched read against the real proxy, record for record the same as /user/info."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from litellm_scim import peers
from scim_operator import metrics
from scim_operator.litellm_api import LiteLLM, LiteLLMError
from scim_operator.user_reads import UserReads


class _Fetches:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.calls.append(list(ids))
        await asyncio.sleep(0.01)
        if self.fail:
            raise LiteLLMError(503, "proxy overloaded", endpoint="/user/list")
        return {uid: {"user_id": uid} for uid in ids if not uid.startswith("gone")}


async def test_reads_due_together_share_calls_of_at_most_a_hundred() -> None:
    fetch = _Fetches()
    reads = UserReads(fetch, window=0.05)
    ids = [f"u{i}" for i in range(250)] + ["gone-1"]
    answers = await asyncio.gather(*(reads.info(uid) for uid in ids))
    assert answers[:250] == [{"user_id": f"u{i}"} for i in range(250)]
    assert answers[250] is None  # LiteLLM has no such user
    assert [len(c) for c in fetch.calls] == [100, 100, 51]
    assert sorted(uid for c in fetch.calls for uid in c) == sorted(ids)


async def test_the_same_user_asked_twice_is_read_once_and_both_get_the_answer() -> None:
    fetch = _Fetches()
    reads = UserReads(fetch, window=0.05)
    first, second = await asyncio.gather(reads.info("u1"), reads.info("u1"))
    assert first == second == {"user_id": "u1"}
    assert fetch.calls == [["u1"]]


async def test_a_failed_call_fails_every_read_of_its_batch_and_the_next_batch_tries_again() -> None:
    fetch = _Fetches(fail=True)
    reads = UserReads(fetch, window=0.01)
    results = await asyncio.gather(reads.info("a"), reads.info("b"), return_exceptions=True)
    assert all(isinstance(r, LiteLLMError) and r.status == 503 for r in results)
    fetch.fail = False
    assert await reads.info("a") == {"user_id": "a"}
    assert len(fetch.calls) == 2


async def test_a_cancelled_read_is_not_fetched_and_does_not_disturb_the_others() -> None:
    fetch = _Fetches()
    reads = UserReads(fetch, window=0.05)
    stopped = asyncio.create_task(reads.info("stopped"))
    kept = asyncio.create_task(reads.info("kept"))
    await asyncio.sleep(0)
    stopped.cancel()
    assert await kept == {"user_id": "kept"}
    assert fetch.calls == [["kept"]]
    await reads.close()


async def test_drift_reads_wait_for_every_reconcile_call_and_urgent_calls_go_first() -> None:
    """One slot, busy: a drift read queued first is served after a reconcile and an urgent call
    queued later, in that order."""
    order: list[str] = []
    gate = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        order.append(request.path)
        if len(order) == 1:
            await gate.wait()  # the call already in flight when the others queue
        return web.json_response({"users": [], "total_pages": 1, "team_info": {"team_id": "t"}, "keys": []})

    app = web.Application()
    for path in ("/team/info", "/user/list", "/key/list"):
        app.router.add_get(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = peers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = LiteLLM(f"http://127.0.0.1:{port}", SecretStr("sk-test"), timeout=10, concurrency=1)
    try:
        running = asyncio.create_task(client.team_info("running"))
        await asyncio.sleep(0.2)
        queued = [asyncio.create_task(client.users_by_id(["u1"]))]
        await asyncio.sleep(0.05)
        queued.append(asyncio.create_task(client.team_info("reconcile")))
        await asyncio.sleep(0.05)
        queued.append(asyncio.create_task(client.user_keys("u2")))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(running, *queued)
        assert order == ["/team/info", "/key/list", "/team/info", "/user/list"]
    finally:
        await client.close()
        await runner.cleanup()


async def test_drift_reads_hold_at_most_a_quarter_of_the_slots_and_leave_the_rest_to_reconciles() -> None:
    """With 8 slots and a burst of drift reads queued, reconcile calls still find free slots at once."""
    in_flight = {"background": 0, "reconcile": 0}
    peak = dict(in_flight)
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        kind = "background" if request.path == "/user/list" else "reconcile"
        in_flight[kind] += 1
        peak[kind] = max(peak[kind], in_flight[kind])
        await release.wait()
        in_flight[kind] -= 1
        return web.json_response({"users": [], "total_pages": 1, "team_info": {"team_id": "t"}})

    app = web.Application()
    app.router.add_get("/user/list", handle)
    app.router.add_get("/team/info", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = peers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = LiteLLM(f"http://127.0.0.1:{port}", SecretStr("sk-test"), timeout=10, concurrency=8)
    try:
        drift = [asyncio.create_task(client.users_by_id([f"u{i}"])) for i in range(20)]
        await asyncio.sleep(0.2)
        reconciles = [asyncio.create_task(client.team_info(f"t{i}")) for i in range(6)]
        await asyncio.sleep(0.2)
        assert in_flight == {"background": 2, "reconcile": 6}
        release.set()
        await asyncio.gather(*drift, *reconciles)
        assert peak["background"] == 2
    finally:
        await client.close()
        await runner.cleanup()


@pytest.fixture
async def api(litellm: peers.LiteLLM) -> AsyncIterator[LiteLLM]:
    client = LiteLLM(litellm.url, SecretStr(litellm.master_key), timeout=20, concurrency=4)
    yield client
    await client.close()


def _calls(endpoint: str) -> float:
    return sum(
        s.value
        for m in metrics.LITELLM_CALLS.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("endpoint") == endpoint
    )


# The fields a drift check compares (objects.user_differences, identity marks, ownership).
_COMPARED = ("user_id", "user_email", "user_alias", "user_role", "metadata", "models", "max_budget",
             "budget_duration", "tpm_limit", "rpm_limit", "sso_user_id")


@pytest.mark.litellm
async def test_batched_reads_answer_what_user_info_answers(api: LiteLLM) -> None:
    tag = uuid.uuid4().hex[:8]
    # Ids that trip a careless filter: one a prefix of another, one with a comma (read alone),
    # one with characters a URL must escape.
    ids = [f"br-{tag}-1", f"br-{tag}-10", f"br-{tag}-a,b", f"br-{tag}-ü+x@example.com"]
    for n, uid in enumerate(ids):
        await api.user_new({
            "user_id": uid, "user_email": f"{n}-{tag}@example.com", "user_alias": f"Person {n}",
            "user_role": "internal_user_viewer" if n % 2 else "internal_user",
            "metadata": {"owner": f"ns/{n}", "scim_active": n != 2},
            "models": ["gpt-4o"] if n else [], "max_budget": 10.0 + n, "budget_duration": "30d",
            "tpm_limit": 1000 + n, "rpm_limit": 10 + n, "sso_user_id": f"sso-{tag}-{n}",
        })
    missing = f"br-{tag}-missing"
    try:
        found = await api.users_by_id([*ids, missing, f"br-{tag}"])
        assert sorted(found) == sorted(ids)
        for uid in ids:
            single = await api.user_info(uid)
            assert single is not None
            assert {f: found[uid].get(f) for f in _COMPARED} == {f: single.get(f) for f in _COMPARED}

        lists, infos = _calls("/user/list"), _calls("/user/info")
        answers = await asyncio.gather(*(api.drift_user_info(uid) for uid in [*ids, missing]))
        assert [a["user_id"] if a else None for a in answers] == [*ids, None]
        # One /user/list for the ids it can carry, one /user/info for the id holding a comma.
        assert (_calls("/user/list") - lists, _calls("/user/info") - infos) == (1, 1)
    finally:
        for uid in ids:
            await api.user_delete(uid)


@pytest.mark.litellm
async def test_a_full_batch_is_answered_by_one_call(api: LiteLLM) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"bb-{tag}-{i}" for i in range(100)]
    await asyncio.gather(*(api.user_new({"user_id": uid}) for uid in ids))
    try:
        lists = _calls("/user/list")
        answers = await asyncio.gather(*(api.drift_user_info(uid) for uid in ids))
        assert [a["user_id"] for a in answers if a] == ids
        assert _calls("/user/list") - lists == 1
    finally:
        await api.call("POST", "/user/delete", body={"user_ids": ids})
