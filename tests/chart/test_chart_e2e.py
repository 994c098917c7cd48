"""The system as the chart runs it: both processes started with the command, arguments and
environment of the rendered Deployments (program from the installed wheel, as in the image), each as
its own ServiceAccount with the Roles the chart grants, against the real API server and the real
LiteLLM proxy. Only what a pod gets from the kubelet is stood in for: the service-account token (a
TokenRequest token in a kubeconfig instead of a mounted file), secretKeyRef and fieldRef values (read
from the API server / the pod's name), and the probes (polled the same way)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helmchart import CHART, Manifests, Render, service_account_kubeconfig
from kubernetes_asyncio import client
from operator_helpers import eventually

from litellm_scim import chart, kube, peers, tokens
from scim_contract import names

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

MASTER_SECRET = {"name": "litellm-master", "key": "masterkey"}


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    found: int = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return found


async def resolve_env(container: dict[str, Any], *, pod_name: str, namespace: str,
                      core: client.CoreV1Api) -> dict[str, str]:
    """What the kubelet would put into the container's environment."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = await core.read_namespaced_secret(ref["name"], namespace)
            env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        else:
            raise AssertionError(f"the test cannot stand in for env source {source}")
    return env


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd="/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def wait_probe(proc: Process, url: str, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while loop.time() < deadline:
            if proc.proc.poll() is not None:
                raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise AssertionError(f"{proc.name}: {url} not 200 within {within}s:\n{proc.output()[-3000:]}")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
async def chart_namespace(kube_api: client.ApiClient, namespace: str) -> AsyncIterator[str]:
    """The test namespace with what exists before `helm install`: the CRDs (incl. Kopf's peering
    CRD from the bundled subchart) and the LiteLLM master-key Secret the values point at."""
    await kube.apply_crds(kube_api, kube.crd_manifests(CHART / "crds")
                          + kube.crd_manifests(CHART / "charts" / "kopf-peering" / "crds"))
    yield namespace


def with_own_ports(args: list[str], ports: dict[str, int]) -> list[str]:
    """A second replica on the same host cannot bind the first one's ports (in the cluster each pod
    has its own network namespace); this is the only change made to a replica's command line."""
    out = []
    for arg in args:
        flag = arg.partition("=")[0]
        out.append(f"{flag}={ports[flag]}" if flag in ports else arg)
    return out


async def start_like_the_deployment(m: Manifests, component: str, *, wheel_venv: Path, kubeconfig: str,
                                    core: client.CoreV1Api, log_dir: Path,
                                    ports: dict[str, int] | None = None) -> Process:
    deployment = m.deployment(component)
    container = m.container(component)
    pod_name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    env = {
        # The image's PATH (the wheel's console script), and kubeconfig credentials in place of
        # the mounted service-account token.
        "PATH": f"{wheel_venv}:/usr/bin:/bin",
        "HOME": str(log_dir),
        "KUBECONFIG": kubeconfig,
        **await resolve_env(container, pod_name=pod_name, namespace=m.namespace, core=core),
    }
    argv = [*container["command"], *with_own_ports(container["args"], ports or {})]
    return Process(pod_name, argv, env, log_dir / f"{pod_name}.log")


async def test_chart_deployments_provision_a_user_end_to_end(
        render: Render, wheel_venv: Path, kubeconfig: str, kube_api: client.ApiClient,
        chart_namespace: str, litellm: peers.LiteLLM, processes: list[Process], tmp_path: Path) -> None:
    ns = chart_namespace
    core = client.CoreV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    ep_port, ep_metrics, op_probe, op_metrics = (peers.free_port() for _ in range(4))
    m = render({
        "litellm": {"url": litellm.url, "masterKeySecret": MASTER_SECRET},
        "endpoint": {"port": ep_port, "metricsPort": ep_metrics},
        "operator": {"probePort": op_probe, "metricsPort": op_metrics},
        "log": {"level": "debug"},
    }, namespace=ns, release="scim")

    # The cluster side of the install: the master-key Secret the admin made beforehand, then the
    # chart's own namespaced objects that this API server can hold.
    await core.create_namespaced_secret(ns, {
        "metadata": {"name": MASTER_SECRET["name"]},
        "data": {MASTER_SECRET["key"]: base64.b64encode(litellm.master_key.encode()).decode()}})
    await chart.apply(kube_api, chart.of_kinds(m.docs, (*chart.RBAC_KINDS, "Secret", "KopfPeering")))
    peering = m.one("KopfPeering")
    credentials = {
        component: await service_account_kubeconfig(
            kube_api, kubeconfig, ns, m.deployment(component)["spec"]["template"]["spec"]["serviceAccountName"],
            tmp_path / f"{component}.kubeconfig")
        for component in ("endpoint", "operator")}

    # One endpoint (its replicas are interchangeable and stateless) and every operator replica the
    # Deployment asks for, since "one active, the others standing by" is what the chart promises.
    endpoint = await start_like_the_deployment(m, "endpoint", wheel_venv=wheel_venv,
                                               kubeconfig=credentials["endpoint"], core=core, log_dir=tmp_path)
    processes.append(endpoint)
    operators: list[tuple[Process, int]] = []
    for replica in range(m.deployment("operator")["spec"]["replicas"]):
        ports = {} if replica == 0 else {"--probe-port": peers.free_port(), "--metrics-port": peers.free_port()}
        proc = await start_like_the_deployment(m, "operator", wheel_venv=wheel_venv,
                                               kubeconfig=credentials["operator"], core=core, log_dir=tmp_path,
                                               ports=ports)
        processes.append(proc)
        operators.append((proc, ports.get("--probe-port", op_probe)))
    assert len(operators) == 2

    ep_container, op_container = m.container("endpoint"), m.container("operator")
    ready = ep_container["readinessProbe"]["httpGet"]
    await wait_probe(endpoint, f"http://127.0.0.1:{port_of(ep_container, ready['port'])}{ready['path']}")
    # The chart's Secret came without a token; the endpoint issues the initial one (the NOTES say
    # how to read it, as here).
    token = (await eventually(lambda: tokens.read_tokens(kube_api, ns, tokens.DEFAULT_SECRET), within=15,
                              what="the initial token"))["default"]
    alive = op_container["livenessProbe"]["httpGet"]
    assert port_of(op_container, alive["port"]) == op_probe
    for proc, probe_port in operators:
        await wait_probe(proc, f"http://127.0.0.1:{probe_port}{alive['path']}")

    scim = f"http://127.0.0.1:{ep_port}/scim/v2"
    email = f"ada.{uuid.uuid4().hex[:8]}@example.com"
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email, "active": True, "displayName": "Ada Lovelace",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": email, "type": "work", "primary": True}],
    }
    async with httpx.AsyncClient(timeout=30) as http:
        denied = await http.post(f"{scim}/Users", json=user, headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401
        created = await http.post(f"{scim}/Users", json=user, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
        assert created.status_code == 201, created.text
        scim_id = created.json()["id"]

        # The operator reconciles the stored ScimUser into LiteLLM and says so in its status.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        status: dict[str, Any] = {}
        while loop.time() < deadline:
            obj = await custom.get_namespaced_custom_object(
                names.API_GROUP, names.VERSION, ns, names.USER.plural, scim_id)
            status = obj.get("status") or {}
            synced = [c for c in status.get("conditions", []) if c["type"] == "Synced"]
            if synced and synced[0]["status"] == "True" and status.get("litellm", {}).get("userId"):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(
                f"ScimUser {scim_id} not synced: {json.dumps(status)}\n"
                + "".join(f"\n--- {p.name}:\n{p.output()[-3000:]}" for p, _ in operators))

        user_id = status["litellm"]["userId"]
        info = await http.get(f"{litellm.url}/user/info", params={"user_id": user_id},
                              headers={"Authorization": f"Bearer {litellm.master_key}"})
        assert info.status_code == 200, info.text
        body = info.json()
        assert body["user_info"]["user_email"] == email
        assert "litellm-scim-operator" in json.dumps(body["user_info"].get("metadata")), "ownership tag"

    # The Prometheus scrape annotations point at live metrics (first operator replica: the one whose
    # ports are exactly the rendered ones).
    async with httpx.AsyncClient(timeout=5) as http:
        for component, proc in [("endpoint", endpoint), ("operator", operators[0][0])]:
            ann = m.deployment(component)["spec"]["template"]["metadata"]["annotations"]
            scraped = await http.get(f"http://127.0.0.1:{ann['prometheus.io/port']}{ann['prometheus.io/path']}")
            assert scraped.status_code == 200 and "# HELP" in scraped.text, f"{proc.name} metrics"

    # Both operator replicas took part in the peering (the standby is there to take over).
    stored = await custom.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings",
                                                       peering["metadata"]["name"])
    assert {p.name for p, _ in operators} <= set(stored.get("status") or {})

    # Secrets never reach the logs.
    for proc in [endpoint, *(p for p, _ in operators)]:
        assert proc.proc.poll() is None, f"{proc.name} died:\n{proc.output()[-3000:]}"
        proc.stop()
        out = proc.output()
        assert token not in out and litellm.master_key not in out

