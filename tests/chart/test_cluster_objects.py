"""The chart's CRDs and custom objects against the REAL API server, and the token Secret's life
across installs and upgrades (helm's `lookup` reads the real cluster with --dry-run=server)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from helmchart import CHART, REPO, Render
from kubernetes_asyncio import client

from litellm_scim import kube

TOP_CRDS = REPO / "crds"
CHART_CRDS = CHART / "crds"
PEERING_CRDS = CHART / "charts" / "kopf-peering" / "crds"


def test_chart_crds_are_byte_identical_to_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in TOP_CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART_CRDS.iterdir()}
    assert top, "no CRDs found"
    assert chart.keys() == top.keys(), "run: cp crds/*.yaml charts/litellm-scim-operator/crds/"
    for name, content in top.items():
        assert chart[name] == content, f"charts/litellm-scim-operator/crds/{name} differs from crds/{name}"


def test_kopf_peering_crd_is_kept_apart_and_optional(render: Render) -> None:
    """Kopf's CRD ships in the bundled subchart, so the project's crds/ stay the contract only."""
    names = {d["metadata"]["name"] for d in kube.crd_manifests(PEERING_CRDS)}
    assert names == {"kopfpeerings.kopf.dev"}
    with_crd = render(extra_args=("--include-crds",))
    crds = {d["metadata"]["name"] for d in with_crd.of_kind("CustomResourceDefinition")}
    assert crds == names | {d["metadata"]["name"] for d in kube.crd_manifests(CHART_CRDS)}
    without = render({"operator": {"peering": {"installCRD": False}}}, extra_args=("--include-crds",))
    assert "kopfpeerings.kopf.dev" not in {d["metadata"]["name"] for d in without.of_kind("CustomResourceDefinition")}


async def test_crds_and_peering_object_apply_to_the_api_server(
        kube_api: client.ApiClient, namespace: str, render: Render) -> None:
    await kube.apply_crds(kube_api, kube.crd_manifests(CHART_CRDS) + kube.crd_manifests(PEERING_CRDS))
    ext = client.ApiextensionsV1Api(kube_api)
    for crd in kube.crd_manifests(CHART_CRDS) + kube.crd_manifests(PEERING_CRDS):
        served = await ext.read_custom_resource_definition(crd["metadata"]["name"])
        assert any(c.type == "Established" and c.status == "True" for c in served.status.conditions)

    peering = render(namespace=namespace).one("KopfPeering")
    custom = client.CustomObjectsApi(kube_api)
    await custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
    # The heartbeat Kopf writes: a merge patch of .status through the main resource.
    beat = {"status": {"operator-7d9f-abc": {"priority": 17, "lifetime": 60,
                                            "lastseen": "2026-01-01T00:00:00.000000+00:00"}}}
    await custom.patch_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", peering["metadata"]["name"], beat,
        _content_type="application/merge-patch+json")
    stored = await custom.get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", peering["metadata"]["name"])
    assert stored["status"] == beat["status"]


# --- the SCIM token Secret across install / upgrade -----------------------------------------------

def helm_owned(secret: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """What `helm install` adds to every object it creates."""
    out = yaml.safe_load(yaml.safe_dump(secret))
    out["metadata"]["annotations"].update(
        {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace})
    return out


@pytest.fixture
def server_render(render: Render, kubeconfig: str) -> Render:
    """Render with lookup() answered by the real API server."""
    def _render(values: dict[str, Any] | None = None, **kw: Any) -> Any:
        return render(values, extra_args=("--dry-run=server", "--kubeconfig", kubeconfig), **kw)
    return _render


async def test_token_secret_created_once_then_kept_across_upgrades(
        kube_api: client.ApiClient, namespace: str, server_render: Render) -> None:
    core = client.CoreV1Api(kube_api)
    install = server_render(namespace=namespace, release="scim").one("Secret")
    token = base64.b64decode(install["data"]["default"]).decode()
    assert len(token) >= 43
    await core.create_namespaced_secret(namespace, helm_owned(install, "scim", namespace))

    # An upgrade renders exactly the stored tokens, not a new one.
    upgrade = server_render(namespace=namespace, release="scim").one("Secret")
    assert upgrade["data"] == install["data"]
    assert upgrade["metadata"]["annotations"] == install["metadata"]["annotations"]

    # A token added later (the `litellm-scim token create` way) survives the next upgrade, and a
    # revoked one is not brought back.
    await core.patch_namespaced_secret(
        "litellm-scim-tokens", namespace,
        {"metadata": {"annotations": {"tokens.scim.litellm-operator.dev/okta": "2026-02-02T00:00:00Z"}},
         "data": {"okta": base64.b64encode(b"second-token").decode()}})
    await core.patch_namespaced_secret(
        "litellm-scim-tokens", namespace,
        [{"op": "remove", "path": "/data/default"},
         {"op": "remove", "path": "/metadata/annotations/tokens.scim.litellm-operator.dev~1default"}],
        _content_type="application/json-patch+json")
    upgrade = server_render(namespace=namespace, release="scim").one("Secret")
    assert set(upgrade["data"]) == {"okta"}
    assert base64.b64decode(upgrade["data"]["okta"]) == b"second-token"
    tokens_annotations = {k for k in upgrade["metadata"]["annotations"] if k.startswith("tokens.")}
    assert tokens_annotations == {"tokens.scim.litellm-operator.dev/okta"}
    assert upgrade["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


async def test_token_secret_made_outside_helm_is_left_alone(
        kube_api: client.ApiClient, namespace: str, server_render: Render) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_secret(namespace, {
        "metadata": {"name": "litellm-scim-tokens"}, "data": {"ci": base64.b64encode(b"x" * 43).decode()}})
    rendered = server_render(namespace=namespace, release="scim")
    assert not rendered.of_kind("Secret"), "helm would refuse to adopt it; the endpoint uses it as is"
    # The endpoint is still pointed at it.
    assert "--token-secret=litellm-scim-tokens" in rendered.container("endpoint")["args"]

