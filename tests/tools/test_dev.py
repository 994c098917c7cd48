"""``litellm-scim dev`` as a newcomer runs it: one process that brings up endpoint and operator on the
test cluster and the session LiteLLM, prints URL and token, and cleans up after itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from litellm_scim import peers

GROUP, VERSION = "scim.litellm-operator.dev", "v1alpha1"
STARTUP_TIMEOUT = 120.0


@dataclass
class DevRun:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def read_until(self, marker: str, within: float = STARTUP_TIMEOUT) -> None:
        async def read() -> None:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError("dev exited early:\n" + self.output)
                self.lines.append(raw.decode().rstrip("\n"))
                if marker in self.lines[-1]:
                    return

        await asyncio.wait_for(read(), within)

    async def finish(self, within: float = 60.0) -> int:
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), within)
        self.lines.extend(rest.decode().splitlines())
        return await asyncio.wait_for(self.proc.wait(), within)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def value(self, label: str) -> str:
        found = [line.split(label, 1)[1].strip() for line in self.lines if line.strip().startswith(label)]
        assert len(found) == 1, self.output
        return found[0]

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"^(endpoint|operator): pid (\d+)", self.output, re.M)}


def _env(kubeconfig: str, litellm: peers.LiteLLM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_SCIM_")}
    env.update(KUBECONFIG=kubeconfig, LITELLM_URL=litellm.url, LITELLM_MASTER_KEY=litellm.master_key)
    return env


@contextlib.asynccontextmanager
async def dev(args: list[str], env: dict[str, str]) -> AsyncIterator[DevRun]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "litellm_scim.cli", "dev", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    run = DevRun(proc)
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                await run.finish()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_port_in_use_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with dev(["--port", str(port), "--state-dir", str(tmp_path)], dict(os.environ)) as run:
            code = await run.finish()
    assert code == 1
    assert f"port {port} is already in use" in run.output and "Traceback" not in run.output
    assert not run.pids()


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("message", "")) for c in obj.get("status", {}).get("conditions", [])}


async def _ready_scim_user(kube_api: client.ApiClient, namespace: str, within: float) -> dict[str, Any]:
    """The ScimUser the endpoint wrote, once the operator reports it Ready (or as it is at the deadline)."""
    api = client.CustomObjectsApi(kube_api)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    items: list[dict[str, Any]] = []
    while loop.time() < deadline:
        items = (await api.list_namespaced_custom_object(GROUP, VERSION, namespace, "scimusers"))["items"]
        if items and _conditions(items[0]).get("Ready", ("",))[0] == "True":
            break
        await asyncio.sleep(0.5)
    assert items, "the endpoint stored no ScimUser"
    return items[0]


@pytest.mark.litellm
@pytest.mark.slow
async def test_dev_runs_the_system_and_stops_cleanly_on_ctrl_c(
        tmp_path: Path, kubeconfig: str, kube_api: client.ApiClient, namespace: str,
        litellm: peers.LiteLLM) -> None:
    port = peers.free_port()
    args = ["--namespace", namespace, "--port", str(port), "--state-dir", str(tmp_path / "dev")]
    async with dev(args, _env(kubeconfig, litellm)) as run:
        await run.read_until("Press Ctrl-C")
        url, token = run.value("SCIM tenant URL:"), run.value("Secret token:")
        assert url == f"http://127.0.0.1:{port}/scim/v2"
        assert set(run.pids()) == {"endpoint", "operator"}
        assert litellm.master_key not in run.output
        for pid in run.pids().values():  # the master key goes by environment, never on a command line
            assert litellm.master_key not in _cmdline(pid)
        assert f"kubectl -n {namespace} get scim" in run.output

        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            created = await http.post("/Users", headers={"Content-Type": "application/scim+json"}, json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                # unique: the session's LiteLLM outlives this namespace, and emails are unique there
                "userName": f"newcomer-{namespace}@example.com", "active": True,
            })
            assert created.status_code == 201, created.text
            assert (await http.get("/Users", headers={"Authorization": "Bearer wrong"})).status_code == 401
        user = await _ready_scim_user(kube_api, namespace, within=60.0)
        assert user["metadata"]["name"] == created.json()["id"]
        assert _conditions(user).get("Ready", ("",))[0] == "True", (_conditions(user), run.output)

        run.proc.send_signal(signal.SIGINT)
        code = await run.finish()
    assert code == 0, run.output
    assert "Stopped." in run.output
    assert all(_gone(pid) for pid in run.pids().values()), run.pids()
    assert not _listening(port)
    # it stopped only what it started: the cluster and LiteLLM it found keep running
    assert peers.kubeconfig_answers(kubeconfig)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{litellm.url}/health/liveliness")).status_code == 200


@pytest.mark.litellm
@pytest.mark.slow
async def test_a_dying_child_stops_everything_with_its_last_log_lines(
        tmp_path: Path, kubeconfig: str, namespace: str, litellm: peers.LiteLLM) -> None:
    port = peers.free_port()
    args = ["--namespace", namespace, "--port", str(port), "--state-dir", str(tmp_path / "dev")]
    async with dev(args, _env(kubeconfig, litellm)) as run:
        await run.read_until("Press Ctrl-C")
        pids = run.pids()
        os.kill(pids["endpoint"], signal.SIGKILL)
        code = await run.finish()
    assert code == 1
    assert "endpoint exited with code -9; its last log lines:" in run.output
    assert "  | " in run.output
    assert all(_gone(pid) for pid in pids.values())
