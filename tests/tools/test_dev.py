"""``litellm-scim dev`` as a newcomer runs it: one process that brings up endpoint and operator on the
test cluster and the session LiteLLM, under the chart's ServiceAccounts, prints URL and token, and
cleans up after itself; run by somebody without the rights its setup needs, it says which one."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from litellm_scim import chart, peers

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

    def users(self) -> dict[str, str]:
        return {m[1]: m[2] for m in re.finditer(r"^(endpoint|operator): pid \d+ as (\S+),", self.output, re.M)}


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
        litellm: peers.LiteLLM, cluster: peers.KubeCluster) -> None:
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

        # Both ran as the chart's ServiceAccounts, each with its own token kubeconfig, never as the caller.
        assert run.users() == {c: f"system:serviceaccount:{namespace}:dev-litellm-scim-operator-{c}"
                               for c in ("endpoint", "operator")}, run.output
        for component, pid in run.pids().items():
            own = tmp_path / "dev" / "kubeconfigs" / component
            assert f"--kubeconfig {own} " in _cmdline(pid)
            assert stat.S_IMODE(own.stat().st_mode) == 0o600
            assert kubeconfig not in _cmdline(pid)
        if cluster.state_dir is not None:  # the local API server logs every refusal
            denied = [line for line in (cluster.state_dir / "apiserver.log").read_text().splitlines()
                      if "RBAC DENY" in line and f":{namespace}:dev-" in line]
            assert not denied, "\n".join(denied)

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


# --- a caller without the rights dev's setup needs ---------------------------------------------------

FAKE_LITELLM = {"LITELLM_URL": "http://127.0.0.1:9", "LITELLM_MASTER_KEY": "sk-never-used"}


async def dev_fails(kubeconfig: str, namespace: str, state_dir: Path) -> tuple[str, str]:
    """Run dev with ``kubeconfig`` as the caller's; it must fail with exit code 1. Returns (stdout, stderr).
    LiteLLM is never reached: the cluster is set up first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_SCIM_")}
    env.update(KUBECONFIG=kubeconfig, **FAKE_LITELLM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "litellm_scim.cli", "dev", "--namespace", namespace, "--port", str(peers.free_port()),
        "--state-dir", str(state_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1, (out.decode(), err.decode())
    assert "Traceback" not in out.decode() + err.decode()
    assert err.decode().count("\n") == 1, err.decode()
    assert "Stopped." in out.decode() and not re.search(r"^(endpoint|operator): pid", out.decode(), re.M)
    return out.decode(), err.decode().rstrip("\n")


@dataclass
class Caller:
    kubeconfig: str
    user: str


CRD_AND_NAMESPACE_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "create", "update"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]},
]
RBAC_WRITER_RULES = [
    *CRD_AND_NAMESPACE_RULES,
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "update"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": ["get", "create", "update"]},
]


@pytest.fixture
async def caller(kube_api: client.ApiClient, kubeconfig: str, namespace: str,
                 tmp_path: Path) -> AsyncIterator[Any]:
    """caller(rules): a ServiceAccount granted ``rules`` cluster-wide (none: nothing at all), with a
    TokenRequest kubeconfig, as whoever runs dev would have."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    cluster_objects: list[str] = []

    async def make(rules: list[dict[str, Any]]) -> Caller:
        name = f"caller-{uuid.uuid4().hex[:6]}"
        await client.CoreV1Api(kube_api).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}})  # type: ignore[arg-type]
        user = chart.service_account_user(namespace, name)
        if rules:
            cluster_objects.append(name)
            await rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})  # type: ignore[arg-type]
            await rbac.create_cluster_role_binding({  # type: ignore[arg-type]
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
            await chart.wait_until_allowed(kube_api, user, verb="create", resource="namespaces", namespace="")
        server, ca = chart.cluster_of(kubeconfig)
        token = await chart.service_account_token(kube_api, namespace, name)
        path = chart.write_token_kubeconfig(tmp_path / name, server=server, ca_pem=ca, token=token,
                                            namespace=namespace, user=user)
        return Caller(str(path), user)

    yield make
    for name in cluster_objects:
        with contextlib.suppress(client.exceptions.ApiException):
            await rbac.delete_cluster_role_binding(name)
        with contextlib.suppress(client.exceptions.ApiException):
            await rbac.delete_cluster_role(name)


HINT = (": ask a cluster admin to grant it or use an admin kubeconfig "
        "(dev installs CRDs, a namespace and the chart's RBAC)")


async def test_a_caller_without_rights_learns_the_first_missing_one(
        caller: Any, namespace: str, tmp_path: Path) -> None:
    nobody = await caller([])
    _, err = await dev_fails(nobody.kubeconfig, namespace, tmp_path / "dev")
    assert re.fullmatch(rf'litellm-scim dev: error: cannot get customresourcedefinitions "[a-z.-]+" at cluster scope '
                        rf"\(forbidden for {re.escape(nobody.user)}\){re.escape(HINT)}", err), err


async def test_a_caller_without_rights_in_the_namespace_learns_it_cannot_write_the_rbac(
        caller: Any, namespace: str, tmp_path: Path) -> None:
    crd_admin = await caller(CRD_AND_NAMESPACE_RULES)
    _, err = await dev_fails(crd_admin.kubeconfig, namespace, tmp_path / "dev")
    assert err == (f"litellm-scim dev: error: cannot create serviceaccounts in namespace {namespace} "
                   f"(forbidden for {crd_admin.user}){HINT}")


async def test_a_caller_may_not_grant_what_it_does_not_hold(caller: Any, namespace: str, tmp_path: Path) -> None:
    writer = await caller(RBAC_WRITER_RULES)
    _, err = await dev_fails(writer.kubeconfig, namespace, tmp_path / "dev")
    assert err.startswith(f"litellm-scim dev: error: cannot create roles in namespace {namespace} "
                          f"(forbidden for {writer.user}, who does not hold the "), err
    assert err.endswith(HINT)


async def test_rejected_credentials_are_one_line(kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    server, ca = chart.cluster_of(kubeconfig)
    forged = chart.write_token_kubeconfig(tmp_path / "forged", server=server, ca_pem=ca, token="not-a-token",
                                          namespace=namespace, user="forged")
    _, err = await dev_fails(str(forged), namespace, tmp_path / "dev")
    assert err == (f"litellm-scim dev: error: the cluster rejected the credentials in {forged} (401 Unauthorized): "
                   "log in again or set KUBECONFIG to a kubeconfig that works")


# --- the LiteLLM kit's PostgreSQL: stopped when dev started it, left alone when it was running -------

# A ROOT of the kit for these tests only (others' test sessions share /var/tmp/litellm-peer and its
# PostgreSQL on 55432: never touched here). The first run installs LiteLLM into it (minutes); later
# runs reuse the install. A lock keeps two test sessions from using it at once.
OWN_ROOT = Path("/var/tmp/litellm-scim-dev-test")
KIT = peers.shared_dir() / "litellm-peer"


@dataclass
class OwnKit:
    root: Path
    pg_port: int

    def env(self, kubeconfig: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LITELLM_SCIM_") and k not in ("LITELLM_URL", "LITELLM_MASTER_KEY")}
        env.update(KUBECONFIG=kubeconfig, LITELLM_PEER_ROOT=str(self.root), LITELLM_PEER_PGPORT=str(self.pg_port))
        return env

    def processes(self) -> list[str]:
        """Command lines of every process that belongs to this ROOT (PostgreSQL's postmaster, proxy, engine)."""
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(self.root) in text:
                    found.append(f"{cmdline.parent.name}: {text}")
        return found

    def pg(self, action: str) -> None:
        subprocess.run([str(KIT / "pg"), str(self.root), action], check=True, capture_output=True,
                       env={**os.environ, "LITELLM_PEER_PGPORT": str(self.pg_port)})


@pytest.fixture
def own_kit() -> Iterator[OwnKit]:
    if not (KIT / "up").exists():
        pytest.skip(f"no LiteLLM kit at {KIT}")
    OWN_ROOT.mkdir(parents=True, exist_ok=True)
    with (OWN_ROOT.parent / f"{OWN_ROOT.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kit = OwnKit(OWN_ROOT, peers.free_port())
        kit.pg("stop")  # left over from an interrupted run: ours alone, under the lock
        try:
            yield kit
        finally:
            subprocess.run([str(KIT / "down"), str(OWN_ROOT), "all"], check=False, capture_output=True)


async def _run_dev_with_own_litellm(kit: OwnKit, kubeconfig: str, namespace: str, state_dir: Path) -> DevRun:
    port = peers.free_port()
    args = ["--namespace", namespace, "--port", str(port), "--state-dir", str(state_dir)]
    async with dev(args, kit.env(kubeconfig)) as run:
        await run.read_until("Press Ctrl-C", within=900.0)  # a fresh ROOT installs LiteLLM first
        assert "LiteLLM: started a local proxy" in run.output
        assert peers.postgres_running(kit.root)
        run.proc.send_signal(signal.SIGINT)
        assert await run.finish(within=120.0) == 0, run.output
    assert "Stopped." in run.output
    assert not _listening(port)
    return run


@pytest.mark.slow
async def test_ctrl_c_stops_the_postgresql_dev_started(
        own_kit: OwnKit, kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    assert not peers.postgres_running(own_kit.root)
    run = await _run_dev_with_own_litellm(own_kit, kubeconfig, namespace, tmp_path / "dev")
    assert f"stopped PostgreSQL of {own_kit.root}" in run.output
    assert not peers.postgres_running(own_kit.root)
    assert not _listening(own_kit.pg_port)
    assert not own_kit.processes(), own_kit.processes()


@pytest.mark.slow
async def test_ctrl_c_leaves_a_postgresql_that_was_already_running(
        own_kit: OwnKit, kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    own_kit.pg("start")  # e.g. a test session's
    run = await _run_dev_with_own_litellm(own_kit, kubeconfig, namespace, tmp_path / "dev")
    assert "PostgreSQL" not in run.output.split("Stopping the local LiteLLM proxy", 1)[1]
    assert peers.postgres_running(own_kit.root) and _listening(own_kit.pg_port)
    assert not [p for p in own_kit.processes() if "postgres" not in p], own_kit.processes()
