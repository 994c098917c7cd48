"""The product as a platform team installs it: the chart rendered, every object the API server can hold
applied exactly as rendered, the image built from the Dockerfile, and the endpoint and the operator
replicas started as containers from the rendered Deployments, with in-cluster credentials of the
chart's ServiceAccounts (no kubeconfig, no admin identity). A whole IdP lifecycle then goes through
the endpoint container's SCIM port, and LiteLLM and the key Secrets are checked.

Admin is used for what the platform team and the kubelet do (apply the chart, create the master-key
Secret, mount tokens) and for inspection."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes_asyncio import client
from operator_helpers import Admin, Kube, eventually
from pods import Pod, engine, start_pod
from product_access import RELEASE, apiserver_log, product_denials

import scim_contract as c
from litellm_scim import chart, peers
from scim_operator.key_secrets import ANNOTATION_ROTATE

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MASTER = {"name": "litellm-master", "key": "masterkey"}
# Kinds the chart renders that only a cluster with a kubelet and controllers serves: their content is
# checked by the render tests; here their pods are run by the test instead.
NOT_SERVED = {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "NetworkPolicy",
              "HorizontalPodAutoscaler", "ServiceMonitor"}
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Figures the README quotes (image size, time to ready), printed at the end of the session.
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    """The image, built once per session from the Dockerfile by `make image`'s script."""
    if engine() is None:  # pragma: no cover - depends on the machine
        pytest.skip("running the image as pods needs podman as root (a kind cluster is not driven from here)")
    tag = f"localhost/litellm-scim-operator:install-test-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    built = subprocess.run([str(REPO / "scripts" / "image"), tag], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    FIGURES["image_build_seconds"] = round(time.monotonic() - started, 1)
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag],
                          capture_output=True, text=True, check=True).stdout.strip()
    FIGURES["image_megabytes"] = round(int(size) / 1e6)
    user = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", tag],
                          capture_output=True, text=True, check=True).stdout.strip()
    FIGURES["image_user"] = user
    yield tag
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"install test figures: {json.dumps(FIGURES, sort_keys=True)}")


@dataclass
class Install:
    """One release of the chart in the test namespace, its pods and a SCIM client."""

    docs: list[dict[str, Any]]
    namespace: str
    admin_api: client.ApiClient
    kubeconfig: str
    image: str
    litellm: peers.LiteLLM
    work: Path
    pods: list[Pod] = field(default_factory=list)

    def deployment(self, component: str) -> dict[str, Any]:
        (found,) = [d for d in self.docs if d["kind"] == "Deployment"
                    and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        return found

    async def start(self, component: str) -> Pod:
        url = urlsplit(self.litellm.url)
        pod = await start_pod(self.deployment(component), image=self.image, admin=self.admin_api,
                              kubeconfig=self.kubeconfig, reach=[url.port or 80], work=self.work)
        self.pods.append(pod)
        return pod

    async def stop_all(self) -> None:
        for pod in self.pods:
            await pod.stop(grace=20)

    async def token(self) -> str:
        """The SCIM token an admin reads from the token Secret (see the install notes)."""
        name = self.docs_named("Secret", "litellm-scim-tokens")["metadata"]["name"]

        async def read() -> str | None:
            secret = await client.CoreV1Api(self.admin_api).read_namespaced_secret(name, self.namespace)
            values = [base64.b64decode(v).decode() for v in (secret.data or {}).values()]
            return values[0] if values else None

        return await eventually(read, within=30, what="a SCIM token in the token Secret")

    def docs_named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found


@pytest.fixture
async def installs(kube_api: client.ApiClient, kubeconfig: str, namespace: str, image: str,
                   litellm: peers.LiteLLM, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Install] = []

    async def install(values: dict[str, Any], key_namespaces: Sequence[str] = ()) -> Install:
        values = {"litellm": {"url": litellm.url, "masterKeySecret": MASTER},
                  "operator": {"keySecretNamespaces": list(key_namespaces)}, **values}
        docs = chart.render(values, release=RELEASE, namespace=namespace, extra_args=("--include-crds",))
        kinds = {d["kind"] for d in docs}
        assert kinds - set(chart.OBJECT_KINDS) <= NOT_SERVED, kinds
        # What the platform team does first: the namespaces keys go to, the master-key Secret.
        for ns in key_namespaces:
            await client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
        await client.CoreV1Api(kube_api).create_namespaced_secret(namespace, {  # type: ignore[arg-type]
            "metadata": {"name": MASTER["name"]},
            "data": {MASTER["key"]: base64.b64encode(litellm.master_key.encode()).decode()}})
        await chart.apply(kube_api, chart.of_kinds(docs, chart.OBJECT_KINDS))
        made.append(Install(docs, namespace, kube_api, kubeconfig, image, litellm, tmp_path))
        return made[-1]

    yield install
    for done in made:
        await done.stop_all()


class Scim:
    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=30, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})

    async def call(self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = 200) -> Any:
        resp = await self.http.request(method, path, json=body)
        assert resp.status_code in ((expect,) if isinstance(expect, int) else expect), \
            f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    async def user(self, name: str, ns: str) -> str:
        email = f"{name}.{ns}@example.com"
        body = {"schemas": [USER_SCHEMA], "userName": email, "active": True, "displayName": name.title(),
                "emails": [{"value": email, "type": "work", "primary": True}]}
        return str((await self.call("POST", "/Users", body, 201))["id"])

    async def group(self, name: str) -> str:
        return str((await self.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name,
                                                        "members": []}, 201))["id"])

    async def patch(self, path: str, *ops: dict[str, Any]) -> None:
        # Groups answer 204 (what Entra expects), users 200 with the resource: both are RFC 7644.
        await self.call("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(ops)}, (200, 204))


async def _start_all(install: Install, operators: int) -> tuple[Pod, list[Pod]]:
    endpoint = await install.start("endpoint")
    ops = [await install.start("operator") for _ in range(operators)]
    FIGURES.setdefault("endpoint_ready_seconds", []).append(round(await endpoint.wait_probe("readinessProbe"), 1))
    for op in ops:
        FIGURES.setdefault("operator_started_seconds", []).append(round(await op.wait_probe("startupProbe"), 1))
    return endpoint, ops


def _working(pod: Pod) -> bool:
    """Kopf peering pauses a replica when a higher-priority peer appears and resumes it when none is
    left: the last of those lines tells the replica's state."""
    out = pod.output()
    return out.rfind("Resuming operations") > out.rfind("Pausing operations")


async def _active(operators: list[Pod]) -> Pod:
    """The one replica at work (the others stand by, paused by Kopf peering)."""

    async def settled() -> list[Pod]:
        working = [p for p in operators if _working(p)]
        return working if len(working) == 1 else []

    (found,) = await eventually(settled, within=60, what="exactly one operator replica at work")
    return found


def _secrets_absent_from_logs(pods: list[Pod], *values: str) -> None:
    for pod in pods:
        out = pod.output()
        for value in values:
            assert value not in out, f"a secret reached the log of {pod.name}"


async def test_default_values_run_as_installed(installs: Callable[..., Any], admin: Admin, namespace: str,
                                               kube_api: client.ApiClient, denials: Callable[[], list[str]]) -> None:
    install: Install = await installs({})
    endpoint, operators = await _start_all(install, operators=install.deployment("operator")["spec"]["replicas"])
    assert len(operators) == 2
    token = await install.token()
    scim = Scim(endpoint.url("http", "/scim/v2"), token)
    unauthenticated = await httpx.AsyncClient().get(endpoint.url("http", "/scim/v2/Users"))
    assert unauthenticated.status_code == 401

    alice, bob = await scim.user("alice", namespace), await scim.user("bob", namespace)
    group = await scim.group(f"ml-{namespace}")
    await scim.patch(f"/Groups/{group}", {"op": "Add", "path": "members", "value": [{"value": alice}, {"value": bob}]})
    await eventually(lambda: _members_are(admin, group, [alice, bob]), within=60, what="team with both members")
    assert (await admin.user(alice) or {}).get("user_email") == f"alice.{namespace}@example.com"

    # A key someone made for Alice in LiteLLM dies with her deactivation in the IdP.
    status, made = await admin.post("/key/generate", {"user_id": alice})
    assert status == 200 and await admin.models_status(made["key"]) == 200
    await scim.patch(f"/Users/{alice}", {"op": "Replace", "path": "active", "value": "False"})
    await eventually(lambda: _refused(admin, made["key"]), within=20, what="deactivated user's key refused")

    await scim.patch(f"/Groups/{group}", {"op": "Remove", "path": f'members[value eq "{bob}"]'})
    await eventually(lambda: _members_are(admin, group, [alice]), within=30, what="bob removed from the team")
    await scim.call("DELETE", f"/Users/{bob}", expect=204)
    await eventually(lambda: _user_gone(admin, bob), within=30, what="bob deleted in LiteLLM")
    # The group's deletion removes its team, although the chart grants no Secret access here.
    await scim.call("DELETE", f"/Groups/{group}", expect=204)
    await eventually(lambda: _team_gone(admin, group), within=30, what="team deleted in LiteLLM")

    # Metrics are where the Prometheus annotations say, on every pod.
    async with httpx.AsyncClient(timeout=5) as http:
        for pod in [endpoint, *operators]:
            ann = pod.deployment["spec"]["template"]["metadata"]["annotations"]
            port = next(p["name"] for p in pod.container["ports"]
                        if str(p["containerPort"]) == ann["prometheus.io/port"])
            scraped = await http.get(pod.url(port, ann["prometheus.io/path"]))
            assert scraped.status_code == 200 and "# HELP" in scraped.text, pod.name
    assert denials() == []
    await install.stop_all()
    _secrets_absent_from_logs([endpoint, *operators], token, install.litellm.master_key)


async def test_keys_in_two_namespaces_rotation_and_standby_takeover(
        installs: Callable[..., Any], admin: Admin, namespace: str, kube_api: client.ApiClient,
        denials: Callable[[], list[str]]) -> None:
    apps, jobs = f"{namespace}-apps", f"{namespace}-jobs"
    install: Install = await installs({"log": {"level": "debug"}}, key_namespaces=[apps, jobs])
    endpoint, operators = await _start_all(install, operators=2)
    kube = Kube(kube_api, namespace)
    # The platform team's policy: personal keys into one namespace, the team's key into both.
    await kube.create(c.POLICY, "engineering", {
        "selector": {"displayNamePattern": "eng-*"},
        "team": {"models": ["gpt-4o"], "maxBudget": 100},
        "keys": {"perMember": {"enabled": True, "secretNamespaces": [apps]},
                 "perTeam": {"enabled": True, "secretNamespaces": [apps, jobs], "rotation": {"overlap": "3s"}}},
    })
    token = await install.token()
    scim = Scim(endpoint.url("http", "/scim/v2"), token)
    alice, bob = await scim.user("alice", namespace), await scim.user("bob", namespace)
    group = await scim.group(f"eng-{namespace}")
    await scim.patch(f"/Groups/{group}", {"op": "Add", "path": "members", "value": [{"value": alice}, {"value": bob}]})

    team_secret = f"litellm-team-key-{group}"
    alice_key = await _key(kube_api, f"litellm-key-{group}-{alice}", apps)
    bob_key = await _key(kube_api, f"litellm-key-{group}-{bob}", apps)
    team_keys = [await _key(kube_api, team_secret, ns) for ns in (apps, jobs)]
    for key in (alice_key, bob_key, *team_keys):
        assert await admin.models_status(key) == 200
    assert (await admin.team(group) or {}).get("max_budget") == 100

    await scim.patch(f"/Users/{alice}", {"op": "replace", "value": {"active": False}})
    await eventually(lambda: _refused(admin, alice_key), within=20, what="deactivated member's key refused")
    await eventually(lambda: _secret_gone(kube_api, f"litellm-key-{group}-{alice}", apps), within=20,
                     what="deactivated member's Secret removed")
    await scim.patch(f"/Groups/{group}", {"op": "Remove", "path": f'members[value eq "{bob}"]'})
    await eventually(lambda: _refused(admin, bob_key), within=20, what="removed member's key refused")

    # Rotation on demand: a new key in the same Secrets, the old one dies after the overlap.
    await kube.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.GROUP.plural, group,
        {"metadata": {"annotations": {ANNOTATION_ROTATE: "1"}}}, _content_type="application/merge-patch+json")
    rotated = await eventually(lambda: _key_other_than(kube_api, team_secret, jobs, team_keys[1]), within=30,
                               what="rotated team key")
    assert await admin.models_status(rotated) == 200
    await eventually(lambda: _refused(admin, team_keys[1]), within=30, what="old team key gone after the overlap")

    # The active replica's pod goes away; the standby takes over.
    active = await _active(operators)
    standby = next(p for p in operators if p is not active)
    started = time.monotonic()
    await active.stop()
    carol = await scim.user("carol", namespace)
    await scim.patch(f"/Groups/{group}", {"op": "Add", "path": "members", "value": [{"value": carol}]})
    carol_key = await _key(kube_api, f"litellm-key-{group}-{carol}", apps, within=120)
    FIGURES["standby_takeover_seconds"] = round(time.monotonic() - started, 1)
    assert await admin.models_status(carol_key) == 200
    assert _working(standby)

    await scim.call("DELETE", f"/Users/{carol}", expect=204)
    await eventually(lambda: _user_gone(admin, carol), within=30, what="carol deleted in LiteLLM")
    assert await admin.models_status(carol_key) == 401
    await scim.call("DELETE", f"/Groups/{group}", expect=204)
    await eventually(lambda: _team_gone(admin, group), within=30, what="team deleted")
    for ns in (apps, jobs):
        await eventually(lambda n=ns: _secret_gone(kube_api, team_secret, n), within=30,
                         what=f"team key Secret removed from {ns}")
    assert await admin.models_status(rotated) == 401
    assert denials() == []
    await install.stop_all()
    _secrets_absent_from_logs([endpoint, *operators], token, install.litellm.master_key, alice_key, bob_key,
                              carol_key, rotated, *team_keys)


async def test_single_operator_without_peering(installs: Callable[..., Any], admin: Admin, namespace: str,
                                               denials: Callable[[], list[str]]) -> None:
    install: Install = await installs({"operator": {"replicas": 1, "peering": {"enabled": False}}})
    assert install.deployment("operator")["spec"]["strategy"]["type"] == "Recreate"
    assert not [d for d in install.docs if d["kind"] == "KopfPeering"]
    endpoint, _ = await _start_all(install, operators=1)
    scim = Scim(endpoint.url("http", "/scim/v2"), await install.token())
    dana = await scim.user("dana", namespace)
    await eventually(lambda: admin.user(dana), within=60, what="user created by the only operator")
    assert denials() == []


@pytest.fixture
def denials(cluster: peers.KubeCluster) -> Callable[[], list[str]]:
    """The refusals of the product's ServiceAccounts logged since the test started (none can be read
    from a cluster the tests did not start)."""
    log = apiserver_log(cluster)
    start = log.stat().st_size if log is not None else 0
    return lambda: product_denials(log, start) if log is not None else []


async def _members_are(admin: Admin, team: str, users: list[str]) -> bool:
    return bool(await admin.members(team) == sorted(users))


async def _refused(admin: Admin, key: str) -> bool:
    return bool(await admin.models_status(key) == 401)


async def _user_gone(admin: Admin, user: str) -> bool:
    return await admin.user(user) is None


async def _team_gone(admin: Admin, team: str) -> bool:
    return await admin.team(team) is None


async def _secret(api: client.ApiClient, name: str, ns: str) -> dict[str, str] | None:
    try:
        secret = await client.CoreV1Api(api).read_namespaced_secret(name, ns)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


async def _key(api: client.ApiClient, name: str, ns: str, within: float = 60) -> str:
    data = await eventually(lambda: _secret(api, name, ns), within=within, what=f"Secret {ns}/{name}")
    return str(data["api-key"])


async def _key_other_than(api: client.ApiClient, name: str, ns: str, old: str) -> str | None:
    data = await _secret(api, name, ns)
    return data["api-key"] if data and data["api-key"] != old else None


async def _secret_gone(api: client.ApiClient, name: str, ns: str) -> bool:
    return await _secret(api, name, ns) is None

