"""LiteLLM outages and operator crashes: nothing lost, nothing duplicated, against real peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum

import scim_contract as c
from litellm_scim import peers

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


class Relay:
    """A TCP relay in front of LiteLLM the test can take down (connections refused) or make answer
    503, exactly what the operator sees when the proxy stops or its load balancer has no backend."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = peers.free_port()
        self.mode = "up"
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Stop listening and cut open connections: connection refused from now on."""
        self.mode = "down"
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._conns):
            writer.close()

    async def errors(self) -> None:
        """Listen, but answer every request with 503."""
        if self._server is None:
            await self.start()
        self.mode = "503"
        for writer in list(self._conns):
            writer.close()

    async def up(self) -> None:
        self.mode = "up"
        if self._server is None:
            await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            if self.mode == "503":
                await reader.read(65536)
                body = b'{"error": {"message": "no healthy upstream", "type": "unavailable", "code": "503"}}'
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._conns.add(up_writer)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()


@pytest.fixture
async def relay(litellm: peers.LiteLLM) -> AsyncIterator[Relay]:
    port = int(litellm.url.rsplit(":", 1)[1])
    r = Relay(port)
    await r.start()
    yield r
    await r.down()


async def _synced(kube_rw: Kube, name: str, kind: c.ResourceKind = c.USER) -> dict[str, Any] | None:
    cond = await kube_rw.condition(kind, name, "Synced")
    return cond if cond and cond["status"] == "True" else None


async def test_litellm_down_then_erroring_then_back_converges_without_manual_steps(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    relay: Relay,
) -> None:
    start_operator(litellm_url=relay.url, drift_interval="600")
    first, second, group = ids("hal"), ids("ida"), ids("sre")
    await kube_rw.create(c.USER, first, {"userName": f"{first}@example.com"})
    await eventually(lambda: _synced(kube_rw, first), what="first user synced")
    _, key = await admin.post("/key/generate", {"user_id": first})

    await relay.down()
    await kube_rw.create(c.USER, second, {"userName": f"{second}@example.com"})
    await kube_rw.patch_spec(c.USER, first, {"active": False})

    async def unavailable(name: str) -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.USER, name, "Synced")
        return cond if cond and cond["reason"] == "LiteLLMUnavailable" else None

    cond = await eventually(lambda: unavailable(second), what="Synced=False while LiteLLM is down")
    assert cond["status"] == "False"
    assert "LiteLLM unreachable" in cond["message"]
    assert "sk-" not in cond["message"]

    await relay.errors()
    await kube_rw.create(c.GROUP, group, {"displayName": "SRE"})
    await kube_rw.set_members(group, [first, second])

    async def says_503() -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.GROUP, group, "Synced")
        return cond if cond and "HTTP 503" in cond.get("message", "") else None

    cond = await eventually(says_503, what="Synced=False with LiteLLM's 503")
    assert "no healthy upstream" in cond["message"]
    assert await admin.user(second) is None  # really nothing got through

    await relay.up()
    await eventually(lambda: _synced(kube_rw, second), within=60, what="second user synced after the outage")
    await eventually(lambda: _synced(kube_rw, group, c.GROUP), within=60, what="group synced after outage")

    async def blocked() -> int | None:
        code = await admin.models_status(key["key"])
        return code if code == 401 else None

    await eventually(blocked, within=60, what="deactivation applied after the outage")
    await eventually(lambda: _members(admin, group, [first, second]), within=60, what="members after outage")


async def _members(admin: Admin, team: str, expected: list[str]) -> list[str] | None:
    members = await admin.members(team)
    return members if members == sorted(expected) else None


async def test_operator_killed_mid_sync_converges_on_restart_without_duplicates(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    names = [ids(f"k{i:02d}") for i in range(40)]
    group = ids("all")
    for name in names:
        await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com", "displayName": name.upper()})
    await kube_rw.create(c.GROUP, group, {"displayName": "Everyone"})
    await kube_rw.set_members(group, names)

    # One call at a time, so the kill surely lands while the sync is under way.
    first = start_operator(drift_interval="600", litellm_concurrency="1")

    async def some_created() -> float | None:
        made = metric_sum(first.metrics(), "litellm_scim_operator_litellm_calls_total", endpoint="/user/new")
        return made if made >= 3 else None

    await eventually(some_created, interval=0.02, what="sync under way")
    first.kill()
    created_before_restart = sum([await admin.user(n) is not None for n in names])
    assert created_before_restart < len(names), "the kill should land mid-sync"

    start_operator(drift_interval="600")
    for name in names:
        await eventually(lambda n=name: _synced(kube_rw, n), within=90, what=f"{name} synced")  # type: ignore[misc]
    members = await eventually(lambda: _members(admin, group, names), within=60, what="all members")
    assert len(members) == len(set(members)) == len(names)
    for name in names:
        user = await admin.user(name)
        assert user is not None
        assert user["metadata"] == {"litellm-scim-operator": f"{namespace}/{name}"}
        status, keys = await admin.get("/key/list", user_id=name)
        assert status == 200
        assert keys["keys"] == []
    cond = await kube_rw.condition(c.GROUP, group, "Synced")
    assert cond is not None and cond["status"] == "True"


async def test_litellm_process_stopped_and_restarted_mid_test(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    litellm: peers.LiteLLM,
) -> None:
    """The real proxy process goes away and comes back on the same database (CI, where the session
    started the proxy itself; with LITELLM_URL set the relay test above covers the same path)."""
    if not litellm.started_here:
        pytest.skip("the LiteLLM proxy was not started by this session (LITELLM_URL is set)")
    start_operator(drift_interval="600")
    first, second, group = ids("ray"), ids("sam"), ids("lab")
    await kube_rw.create(c.USER, first, {"userName": f"{first}@example.com"})
    await eventually(lambda: _synced(kube_rw, first), what="first user synced")

    await asyncio.to_thread(litellm.stop)
    await kube_rw.create(c.USER, second, {"userName": f"{second}@example.com"})
    await kube_rw.create(c.GROUP, group, {"displayName": "Lab"})
    await kube_rw.set_members(group, [first, second])

    async def unavailable() -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.USER, second, "Synced")
        return cond if cond and cond["reason"] == "LiteLLMUnavailable" else None

    await eventually(unavailable, within=60, what="Synced=False while the proxy is stopped")

    await asyncio.to_thread(litellm.restart)
    await asyncio.to_thread(peers.wait_http, f"{litellm.url}/health/readiness", 180.0)
    await eventually(lambda: _synced(kube_rw, second), within=120, what="second user synced after restart")
    await eventually(lambda: _members(admin, group, [first, second]), within=120, what="members after restart")
