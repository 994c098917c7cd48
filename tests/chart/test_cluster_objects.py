"""The chart's CRDs and custom objects against the REAL API server, and that rendering with the
cluster at hand (--dry-run=server, where a chart could `lookup` live objects) renders no live token.
The token Secret's life through install, upgrade and rollback is in test_helm_lifecycle.py."""

from __future__ import annotations

import yaml
from helmchart import CHART, REPO, Render
from kubernetes_asyncio import client

from litellm_scim import chart
from scim_common import tokens

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
    names = {d["metadata"]["name"] for d in chart.crd_manifests(PEERING_CRDS)}
    assert names == {"kopfpeerings.kopf.dev"}
    with_crd = render(extra_args=("--include-crds",))
    crds = {d["metadata"]["name"] for d in with_crd.of_kind("CustomResourceDefinition")}
    assert crds == names | {d["metadata"]["name"] for d in chart.crd_manifests(CHART_CRDS)}
    without = render({"operator": {"peering": {"installCRD": False}}}, extra_args=("--include-crds",))
    assert "kopfpeerings.kopf.dev" not in {d["metadata"]["name"] for d in without.of_kind("CustomResourceDefinition")}


async def test_crds_and_peering_object_apply_to_the_api_server(
        kube_api: client.ApiClient, namespace: str, render: Render) -> None:
    await chart.apply_crds(kube_api, chart.crd_manifests(CHART_CRDS) + chart.crd_manifests(PEERING_CRDS))
    ext = client.ApiextensionsV1Api(kube_api)
    for crd in chart.crd_manifests(CHART_CRDS) + chart.crd_manifests(PEERING_CRDS):
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


# --- the SCIM token Secret with the cluster at hand ------------------------------------------------

async def test_rendering_against_the_cluster_never_copies_live_tokens(
        kube_api: client.ApiClient, namespace: str, render: Render, kubeconfig: str) -> None:
    """The chart reads nothing from the cluster: with live tokens in the Secret, a render that could
    look them up is the same as one without a cluster, so no token reaches the release."""
    _, okta = await tokens.create_token(kube_api, namespace, tokens.DEFAULT_SECRET, "okta")
    with_cluster = render(namespace=namespace, release="scim",
                          extra_args=("--dry-run=server", "--kubeconfig", kubeconfig))
    assert with_cluster.docs == render(namespace=namespace, release="scim").docs
    assert okta not in yaml.safe_dump_all(with_cluster.docs)
    assert not {"data", "stringData"} & with_cluster.one("Secret").keys()
