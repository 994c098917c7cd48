"""Test fixtures on REAL peers: a Kubernetes API server and (for operator tests) a LiteLLM proxy.

An existing cluster is used when ``SCIM_TEST_KUBECONFIG``/``KUBECONFIG`` answers (kind on a laptop);
otherwise the local API server kit is started for the session. LiteLLM likewise comes from
``LITELLM_URL``/``LITELLM_MASTER_KEY`` or the local proxy kit, started only if a test asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from product_access import RELEASE, ChartAccess, apiserver_log, product_denials

from litellm_scim import chart, peers
from scim_common import kube
from scim_contract import API_GROUP, FINALIZER, GROUP, USER, VERSION

# The operator tests' fixtures (tests/operator/operator_fixtures.py) are a plugin rather than a second
# conftest.py, so `from conftest import ...` in other test folders keeps meaning this tree's own file.
sys.path.insert(0, str(Path(__file__).resolve().parent / "operator"))
pytest_plugins = ["operator_fixtures"]


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def cluster(state_dir: Path) -> Iterator[peers.KubeCluster]:
    found = peers.find_or_start_cluster(state_dir / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))

    async def install() -> None:
        api = await kube.api_client(found.kubeconfig)
        async with api:
            await chart.apply_crds(api)

    asyncio.run(install())
    yield found
    found.stop()


@pytest.fixture(scope="session")
def kubeconfig(cluster: peers.KubeCluster) -> str:
    return cluster.kubeconfig


@pytest.fixture
async def kube_api(kubeconfig: str) -> AsyncIterator[client.ApiClient]:
    api = await kube.api_client(kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace per test, so tests never see each other's resources."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await chart.ensure_namespace(kube_api, name)
    yield name
    # ScimUsers and ScimGroups carry the operator's finalizer from their creation; with no operator
    # left to remove it, a real cluster would keep the namespace Terminating.
    objects = client.CustomObjectsApi(kube_api)
    for kind in (USER, GROUP):
        with contextlib.suppress(client.exceptions.ApiException):
            listing = await objects.list_namespaced_custom_object(API_GROUP, VERSION, name, kind.plural)
            for obj in listing["items"]:
                held = obj["metadata"].get("finalizers") or []
                if FINALIZER in held:
                    await objects.patch_namespaced_custom_object(
                        API_GROUP, VERSION, name, kind.plural, obj["metadata"]["name"],
                        {"metadata": {"finalizers": [f for f in held if f != FINALIZER]}},
                        _content_type="application/merge-patch+json")
    # The test API server has no garbage collector; a namespace per test keeps runs independent anyway.
    with contextlib.suppress(client.exceptions.ApiException):
        await client.CoreV1Api(kube_api).delete_namespace(name)


# ---- the product's identities: exactly what the chart grants ------------------------------------
@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """``operator.keySecretNamespaces`` of the chart the test installs (override in a test module)."""
    return []


def chart_values(namespace: str, key_namespaces: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "litellm": {"url": "http://litellm.invalid:4000", "masterKeySecret": {"name": "litellm-master"}},
        "operator": {"keySecretNamespaces": key_namespaces},
        **extra,
    }


@pytest.fixture
async def chart_access(kube_api: client.ApiClient, kubeconfig: str, namespace: str,
                       key_secret_namespaces: list[str], tmp_path: Path) -> ChartAccess:
    docs = chart.render(chart_values(namespace, key_secret_namespaces), release=RELEASE, namespace=namespace)
    for other in key_secret_namespaces:
        await chart.ensure_namespace(kube_api, other)
    await chart.apply(kube_api, chart.of_kinds(docs, (*chart.RBAC_KINDS, "KopfPeering")))
    server, ca = chart.cluster_of(kubeconfig)
    paths: dict[str, str] = {}
    users: dict[str, str] = {}
    for sa in chart.of_kinds(docs, ("ServiceAccount",)):
        name = sa["metadata"]["name"]
        component = sa["metadata"]["labels"]["app.kubernetes.io/component"]
        token = await chart.service_account_token(kube_api, namespace, name)
        path = chart.write_token_kubeconfig(tmp_path / f"{component}.kubeconfig", server=server, ca_pem=ca,
                                            token=token, namespace=namespace, user=name)
        paths[component], users[component] = str(path), chart.service_account_user(namespace, name)
    # RBAC applies when the authorizer's watch delivers it: wait for the last binding of each.
    await chart.wait_until_allowed(kube_api, users["endpoint"], verb="create", resource="scimusers",
                                   group=API_GROUP, namespace=namespace)
    await chart.wait_until_allowed(kube_api, users["operator"], verb="patch", resource="scimusers/status",
                                   group=API_GROUP, namespace=namespace)
    for other in key_secret_namespaces:
        await chart.wait_until_allowed(kube_api, users["operator"], verb="create", resource="secrets",
                                       namespace=other)
    peering = chart.of_kinds(docs, ("KopfPeering",))
    return ChartAccess(endpoint_kubeconfig=paths["endpoint"], operator_kubeconfig=paths["operator"],
                       endpoint_user=users["endpoint"], operator_user=users["operator"],
                       peering=peering[0]["metadata"]["name"] if peering else "")


@pytest.fixture
def endpoint_kubeconfig(chart_access: ChartAccess) -> str:
    return chart_access.endpoint_kubeconfig


@pytest.fixture
async def endpoint_api(endpoint_kubeconfig: str) -> AsyncIterator[client.ApiClient]:
    """The endpoint's own API connection, as its ServiceAccount."""
    api = await kube.api_client(endpoint_kubeconfig)
    async with api:
        yield api


# ---- no request of the product refused ----------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "denials(reason): the test provokes RBAC refusals of the product on purpose (say why)")


@pytest.fixture(autouse=True)
def no_rbac_denials(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test when the API server refused any request of the product's ServiceAccounts while it
    ran (the local API server logs one line per refusal; an existing cluster is not inspected)."""
    if "cluster" not in request.fixturenames:
        yield
        return
    log = apiserver_log(request.getfixturevalue("cluster"))
    start = log.stat().st_size if log is not None and log.exists() else 0
    yield
    if log is None or request.node.get_closest_marker("denials") is not None:
        return
    denied = product_denials(log, start)
    assert not denied, "the API server refused the product:\n" + "\n".join(denied)


@pytest.fixture(scope="session")
def litellm() -> Iterator[peers.LiteLLM]:
    proxy = peers.find_or_start_litellm()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    return peers.kube_clis()
