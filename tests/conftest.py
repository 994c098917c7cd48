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

import pytest
from kubernetes_asyncio import client

from litellm_scim import kube, peers
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
            await kube.apply_crds(api)

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
    await kube.ensure_namespace(kube_api, name)
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


@pytest.fixture(scope="session")
def litellm() -> Iterator[peers.LiteLLM]:
    proxy = peers.find_or_start_litellm()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    return peers.kube_clis()
