"""The token Secret through a real Helm lifecycle on the API server: `helm install`, the endpoint
issuing the initial token as the chart's own ServiceAccount, tokens added and revoked with
`litellm-scim token`, `helm upgrade`, `helm rollback`, and what Helm keeps in its release history.

Token values must never be part of a release: Helm stores every revision, and a rollback would write
a token revoked since then back into the Secret. How helm is run against the local API server kit
(post-renderer, the update bridge) is explained in helmrelease.py."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from helmchart import CHART, REQUIRED_VALUES, TOKEN_PATTERN, deep_merge, service_account_kubeconfig
from helmrelease import (
    Helm,
    HelmError,
    UnconditionalSecretUpdates,
    needs_update_bridge,
    release_records,
    write_post_renderer,
)
from kubernetes_asyncio import client
from operator_helpers import eventually, start_endpoint, stop_endpoint

from litellm_scim import chart
from scim_common import tokens

pytestmark = pytest.mark.slow

RELEASE = "scim"
SECRET = tokens.DEFAULT_SECRET


@pytest.fixture
async def helm(kube_bin: Path, kube_api: client.ApiClient, namespace: str, kubeconfig: str,
               tmp_path: Path) -> AsyncIterator[Helm]:
    bridge: UnconditionalSecretUpdates | None = None
    helm_kubeconfig = kubeconfig
    if await needs_update_bridge(kube_api, namespace):
        bridge = UnconditionalSecretUpdates(kubeconfig, tmp_path)
        helm_kubeconfig = await bridge.start()
    try:
        yield Helm(kube_bin / "helm", helm_kubeconfig, tmp_path / "helm-home")
    finally:
        if bridge is not None:
            await bridge.stop()


@pytest.fixture
def chart_args(tmp_path: Path) -> list[str]:
    """The chart, the required values and the post-renderer, for install and upgrade."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(REQUIRED_VALUES))
    return [str(CHART), "-f", str(values), "--post-renderer", str(write_post_renderer(tmp_path))]


async def live_tokens(api: client.ApiClient, namespace: str) -> dict[str, str]:
    return await tokens.read_tokens(api, namespace, SECRET)


async def token_cli(kubeconfig: str, namespace: str, *args: str) -> str:
    """`litellm-scim token ...` as a person runs it; returns the token a `create` printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "litellm_scim.cli", "token", *args, "--namespace", namespace,
        "--kubeconfig", kubeconfig, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return next((line.split(":", 1)[1].strip() for line in out.decode().splitlines()
                 if line.startswith("Secret token:")), "")


async def status_with(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{url}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})).status_code


async def refused(url: str, token: str) -> bool:
    return await status_with(url, token) == 401


async def endpoint_account(api: client.ApiClient, namespace: str) -> str:
    """The endpoint's ServiceAccount, as helm installed it."""
    listing = await client.CoreV1Api(api).list_namespaced_service_account(
        namespace, label_selector=f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=endpoint")
    (account,) = listing.items
    return str(account.metadata.name)


async def test_upgrade_and_rollback_keep_live_tokens_and_never_bring_back_a_revoked_one(
        helm: Helm, chart_args: list[str], kube_api: client.ApiClient, namespace: str, kubeconfig: str,
        tmp_path: Path) -> None:
    ns = namespace
    core = client.CoreV1Api(kube_api)
    notes = await helm.run("install", RELEASE, "-n", ns, *chart_args)
    assert f"kubectl -n {ns} get secret {SECRET} -o jsonpath='{{.data.default}}' | base64 -d" in notes

    installed = await core.read_namespaced_secret(SECRET, ns)
    assert not installed.data, "the chart renders the Secret without any token"
    assert installed.metadata.annotations[tokens.INITIAL_TOKEN_ANNOTATION] == "default"

    # The endpoint, with exactly the permissions the release gave its ServiceAccount, issues the
    # initial token within seconds.
    account = await endpoint_account(kube_api, ns)
    as_endpoint = await service_account_kubeconfig(kube_api, kubeconfig, ns, account, tmp_path / "endpoint.kubeconfig")
    ep = await asyncio.to_thread(start_endpoint, as_endpoint, ns, tmp_path / "endpoint.log")
    try:
        issued = await eventually(lambda: live_tokens(kube_api, ns), within=15, what="the initial token")
        first = issued["default"]
        assert set(issued) == {"default"} and first.startswith(tokens.TOKEN_PREFIX)
        assert await status_with(ep.url, first) == 200

        # Rotation as the README describes it: a new token, then the old one revoked.
        second = await token_cli(kubeconfig, ns, "create", "second")
        await token_cli(kubeconfig, ns, "revoke", "default")
        await eventually(lambda: refused(ep.url, first), what="the revoked token refused")

        # A real change, so the upgrade patches objects (the Role, the Secret's labels) for real.
        await helm.run("upgrade", RELEASE, "-n", ns, *chart_args, "--set", "endpoint.replicas=3")
        assert await live_tokens(kube_api, ns) == {"second": second}

        await helm.run("rollback", RELEASE, "1", "-n", ns)
        assert await live_tokens(kube_api, ns) == {"second": second}, "the revoked token came back"
        secret = await core.read_namespaced_secret(SECRET, ns)
        assert set(secret.data) == {"second"}
        annotations = secret.metadata.annotations
        assert f"{tokens.CREATED_ANNOTATION_PREFIX}default" not in annotations
        assert f"{tokens.CREATED_ANNOTATION_PREFIX}second" in annotations
        assert tokens.INITIAL_TOKEN_ISSUED_ANNOTATION in annotations, "kept: no second initial token"
        assert annotations[tokens.INITIAL_TOKEN_ANNOTATION] == "default"

        assert await status_with(ep.url, first) == 401
        assert await status_with(ep.url, second) == 200
    finally:
        await asyncio.to_thread(stop_endpoint, ep)
    log = ep.log.read_text()
    assert "issued the initial SCIM token 'default'" in log
    assert first not in log and second not in log

    history = json.loads(await helm.run("history", RELEASE, "-n", ns, "-o", "json"))
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]

    # Every revision Helm keeps (base64 + gzip JSON: manifest, values, chart, notes): no token.
    records = await release_records(kube_api, ns, RELEASE)
    assert [record["version"] for _, record in records] == [1, 2, 3]
    for _, record in records:
        text = json.dumps(record)
        assert first not in text and second not in text
        assert not TOKEN_PATTERN.search(text)
        (stored,) = [d for d in yaml.safe_load_all(record["manifest"]) if d and d["kind"] == "Secret"]
        assert stored["metadata"]["name"] == SECRET
        assert not {"data", "stringData"} & stored.keys()

    # Uninstall keeps the Secret (helm.sh/resource-policy: keep); a reinstall takes it over as it is.
    await helm.run("uninstall", RELEASE, "-n", ns)
    assert await live_tokens(kube_api, ns) == {"second": second}
    await helm.run("install", RELEASE, "-n", ns, *chart_args)
    assert await live_tokens(kube_api, ns) == {"second": second}
    reinstalled = (await core.read_namespaced_secret(SECRET, ns)).metadata.annotations
    assert tokens.INITIAL_TOKEN_ISSUED_ANNOTATION in reinstalled, "no new initial token after a reinstall"


async def test_a_token_secret_the_release_did_not_make_is_never_taken_over(
        helm: Helm, chart_args: list[str], kube_api: client.ApiClient, namespace: str) -> None:
    """Made with `litellm-scim token create` before the install: helm refuses to adopt it (it has no
    release metadata), and with scimTokens.create=false the release leaves it alone."""
    _, value = await tokens.create_token(kube_api, namespace, SECRET, "ci")
    with pytest.raises(HelmError, match="exists and cannot be imported into the current release"):
        await helm.run("install", RELEASE, "-n", namespace, *chart_args)
    assert await live_tokens(kube_api, namespace) == {"ci": value}

    await helm.run("upgrade", "--install", RELEASE, "-n", namespace, *chart_args, "--set", "scimTokens.create=false")
    secret = await client.CoreV1Api(kube_api).read_namespaced_secret(SECRET, namespace)
    assert tokens.parse_token_secret(secret) == {"ci": value}
    assert "meta.helm.sh/release-name" not in (secret.metadata.annotations or {})


async def test_kubectl_apply_of_the_rendered_chart_keeps_the_tokens(
        kube_bin: Path, kube_api: client.ApiClient, namespace: str, kubeconfig: str, tmp_path: Path) -> None:
    """What tools that render the chart themselves do (`helm template | kubectl apply`, Argo CD's
    default sync): re-applying the rendered Secret, changed or not, keeps the live tokens."""
    async def apply(values: dict[str, object]) -> None:
        docs = chart.render(deep_merge(REQUIRED_VALUES, values), release=RELEASE, namespace=namespace)
        manifest = tmp_path / "secret.yaml"
        manifest.write_text(yaml.safe_dump_all(chart.of_kinds(docs, ["Secret"])))
        proc = await asyncio.create_subprocess_exec(
            str(kube_bin / "kubectl"), "--kubeconfig", kubeconfig, "apply", "-f", str(manifest),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()

    await apply({})
    _, value = await tokens.create_token(kube_api, namespace, SECRET, "okta")
    await apply({})
    await apply({"commonLabels": {"team": "identity"}})
    assert await live_tokens(kube_api, namespace) == {"okta": value}
    secret = await client.CoreV1Api(kube_api).read_namespaced_secret(SECRET, namespace)
    assert secret.metadata.labels["team"] == "identity"
    assert value not in secret.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]
