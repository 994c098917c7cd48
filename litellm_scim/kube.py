"""Connecting to the Kubernetes API (kubernetes_asyncio) and installing the CRDs from ``crds/``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

CRD_DIR = Path(__file__).resolve().parent.parent / "crds"
# Kopf's KopfPeering CRD, as the chart ships it (a sub-chart, so it can be left out where another
# Kopf operator installed it already).
PEERING_CRD_DIR = CRD_DIR.parent / "charts" / "litellm-scim-operator" / "charts" / "kopf-peering" / "crds"


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from an explicit kubeconfig, the in-cluster service account, or $KUBECONFIG."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def crd_manifests(*directories: Path) -> list[dict[str, Any]]:
    """The CRDs in the given folders (default: the project's own and Kopf's peering CRD)."""
    docs: list[dict[str, Any]] = []
    for directory in directories or (CRD_DIR, PEERING_CRD_DIR):
        for path in sorted(directory.glob("*.yaml")):
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


async def apply_crds(api: client.ApiClient, manifests: list[dict[str, Any]] | None = None,
                     wait_seconds: float = 30.0) -> None:
    """Create or replace each CRD, then wait until the API server serves all of them."""
    ext = client.ApiextensionsV1Api(api)
    manifests = crd_manifests() if manifests is None else manifests
    for crd in manifests:
        name = crd["metadata"]["name"]
        try:
            current = await ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]
            continue
        body = dict(crd)
        body["metadata"] = {**crd["metadata"], "resourceVersion": current.metadata.resource_version}
        await ext.replace_custom_resource_definition(name, body)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    for crd in manifests:
        name = crd["metadata"]["name"]
        while True:
            current = await ext.read_custom_resource_definition(name)
            conditions = current.status.conditions or [] if current.status else []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"CRD {name} not established after {wait_seconds}s")
            await asyncio.sleep(0.1)


def refusal(exc: ApiException, verb: str, resource: str, *, namespace: str | None = None,
            name: str | None = None) -> str:
    """One line saying which request the API server refused and why, e.g.
    ``cannot list secrets in namespace apps (forbidden)`` — never the request or response body."""
    target = f'{resource} "{name}"' if name else resource
    where = f" in namespace {namespace}" if namespace else " at cluster scope"
    if exc.status == 403:
        return f"cannot {verb} {target}{where} (forbidden)"
    if exc.status == 401:
        return f"cannot {verb} {target}{where} (credentials rejected)"
    return f"cannot {verb} {target}{where}: HTTP {exc.status} {exc.reason or ''}".rstrip()


async def ensure_namespace(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    try:
        await core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status != 409:
            raise
