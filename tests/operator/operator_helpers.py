"""Helpers of the operator tests: the operator and the endpoint as real subprocesses (also used by the
endpoint tests and the benchmarks), resource writers that mimic the SCIM endpoint (users, groups,
member shards), a LiteLLM admin client and polling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

import scim_contract as c
from litellm_scim import peers

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 30.0,
                     interval: float = 0.2, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {within}s; last value: {last!r}")


@dataclass
class OperatorProcess:
    """``litellm-scim operator`` in a subprocess, as it runs in a pod."""

    namespace: str
    kubeconfig: str
    litellm_url: str
    master_key: str = field(repr=False)
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    probe_port: int = 0
    metrics_port: int = 0

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        self.probe_port = peers.free_port()
        self.metrics_port = peers.free_port()
        env = {**os.environ, "LITELLM_MASTER_KEY": self.master_key}
        env.pop("LITELLM_SCIM_NAMESPACE", None)
        args = {
            "namespace": self.namespace, "kubeconfig": self.kubeconfig, "litellm-url": self.litellm_url,
            "probe-port": str(self.probe_port), "metrics-port": str(self.metrics_port),
            "drift-interval": "2", "log-format": "text", "litellm-timeout": "20", **self.extra,
        }
        cmd = [sys.executable, "-m", "litellm_scim.cli", "operator"]
        for key, value in args.items():
            if value == "":
                cmd.append(f"--{key}")
            else:
                cmd += [f"--{key}", value]
        if "peering" not in self.extra and "no-standalone" not in self.extra:
            cmd.append("--standalone")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not live within {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer work, exactly like a node loss."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())


@dataclass
class EndpointProcess:
    """``litellm-scim endpoint`` in a subprocess; ``url`` is its base, without ``/scim/v2``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_endpoint(kubeconfig: str, namespace: str, log: Path, *args: str) -> EndpointProcess:
    """Start an endpoint on a free port and wait until it is ready; ``args`` are extra flags."""
    port = peers.free_port()
    # The caller's LITELLM_SCIM_* variables would silently change the endpoint under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_SCIM_")}
    env["KUBECONFIG"] = kubeconfig
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "litellm_scim.cli", "endpoint", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--namespace", namespace, "--kubeconfig", kubeconfig, "--log-format", "text",
         *args],
        stdout=out, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        peers.wait_http(f"{url}/readyz", timeout=30)
    except TimeoutError:
        proc.terminate()
        raise RuntimeError(f"endpoint did not become ready: {log.read_text()[-2000:]}") from None
    return EndpointProcess(url, proc, log)


def stop_endpoint(ep: EndpointProcess) -> None:
    ep.proc.terminate()
    try:
        ep.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        ep.proc.kill()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


class Kube:
    """Writes resources the way the SCIM endpoint does, and reads status and events."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    async def create(self, kind: c.ResourceKind, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": c.API_VERSION, "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
        result: dict[str, Any] = await self.objects.create_namespaced_custom_object(
            c.API_GROUP, c.VERSION, self.ns, kind.plural, body)
        return result

    async def get(self, kind: c.ResourceKind, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.objects.get_namespaced_custom_object(
                c.API_GROUP, c.VERSION, self.ns, kind.plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def patch_spec(self, kind: c.ResourceKind, name: str, spec: dict[str, Any]) -> None:
        await self.objects.patch_namespaced_custom_object(
            c.API_GROUP, c.VERSION, self.ns, kind.plural, name, {"spec": spec},
            _content_type="application/merge-patch+json")

    async def delete(self, kind: c.ResourceKind, name: str) -> None:
        await self.objects.delete_namespaced_custom_object(c.API_GROUP, c.VERSION, self.ns, kind.plural, name)

    async def set_members(self, group: str, users: list[str], nested: list[str] | None = None) -> None:
        """Write the group's member shards as the endpoint does: one shard per hash bucket."""
        buckets: dict[int, list[str]] = {}
        for uid in users:
            buckets.setdefault(c.shard_of(uid), []).append(uid)
        nested_buckets: dict[int, list[str]] = {}
        for gid in nested or []:
            nested_buckets.setdefault(c.shard_of(gid), []).append(gid)
        for shard in range(c.SHARDS):
            name = c.shard_name(group, shard)
            spec = {"group": group, "shard": shard, "users": sorted(buckets.get(shard, [])),
                    "groups": sorted(nested_buckets.get(shard, []))}
            current = await self.get(c.SHARD, name)
            if current is None:
                if spec["users"] or spec["groups"]:
                    body = {"apiVersion": c.API_VERSION, "kind": c.SHARD.kind,
                            "metadata": {"name": name, "labels": {c.LABEL_GROUP: group}}, "spec": spec}
                    await self.objects.create_namespaced_custom_object(
                        c.API_GROUP, c.VERSION, self.ns, c.SHARD.plural, body)
            elif (current["spec"].get("users", []), current["spec"].get("groups", [])) != (
                    spec["users"], spec["groups"]):
                await self.patch_spec(c.SHARD, name, spec)

    async def condition(self, kind: c.ResourceKind, name: str, ctype: str) -> dict[str, Any] | None:
        obj = await self.get(kind, name)
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == ctype:
                return dict(cond)
        return None

    async def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about the named object."""
        listing = await self.core.list_namespaced_event(self.ns)
        return [(e.type, e.reason, e.message or "") for e in listing.items
                if e.involved_object and e.involved_object.name == name]


class Admin:
    """The LiteLLM admin API as a person (or the UI) uses it, to set up and check state."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"},
                                             timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path, params=params) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def user(self, user_id: str) -> dict[str, Any] | None:
        status, data = await self.get("/user/info", user_id=user_id)
        if status == 404:
            return None
        assert status == 200, data
        info = data.get("user_info") or {}
        return dict(info) if info.get("user_id") == user_id else None

    async def team(self, team_id: str) -> dict[str, Any] | None:
        status, data = await self.get("/team/info", team_id=team_id)
        if status == 404:
            return None
        assert status == 200, data
        return dict(data["team_info"])

    async def members(self, team_id: str) -> list[str] | None:
        team = await self.team(team_id)
        if team is None:
            return None
        return sorted(m["user_id"] for m in team.get("members_with_roles") or [])

    async def models_status(self, key: str) -> int:
        """What a client using ``key`` gets from the proxy."""
        async with aiohttp.ClientSession() as plain, plain.get(
                self.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status
