"""The Helm chart as a cluster gets it: rendered by ``helm template``, its objects applied, and its
ServiceAccounts turned into credentials.

``litellm-scim dev`` and the tests run the endpoint and the operator with exactly the permissions the
chart grants (a ServiceAccount token from the TokenRequest API, as a pod gets one), never with the
identity of whoever started them. The chart is the one place those permissions are written down."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from litellm_scim import peers

CHART = peers.REPO / "charts" / "litellm-scim-operator"
CRD_DIR = peers.REPO / "crds"
# Kopf's KopfPeering CRD, as the chart ships it (a sub-chart, so it can be left out where another
# Kopf operator installed it already).
PEERING_CRD_DIR = CHART / "charts" / "kopf-peering" / "crds"



# Kinds a cluster without a kubelet can hold: everything the chart renders except workloads, Services
# and network objects. `apply` refuses other kinds instead of silently dropping them.
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
OBJECT_KINDS = ("Namespace", "CustomResourceDefinition", *RBAC_KINDS, "Secret", "ConfigMap", "KopfPeering")

# How long the tokens dev and the tests request stay valid (a pod's token is refreshed by the kubelet).
TOKEN_SECONDS = 24 * 3600


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


async def ensure_namespace(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    try:
        await core.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status != 409:
            raise


class ChartError(Exception):
    """``helm template`` refused the values (the message is helm's own), or helm is missing."""


def helm() -> Path:
    found = peers.kube_clis() / "helm"
    if not found.exists():
        raise ChartError("helm not found: install helm 3 or put it on PATH")
    return found


def render(values: Mapping[str, Any], *, release: str, namespace: str, chart: Path = CHART,
           extra_args: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders for these values, in the chart's order."""
    proc = subprocess.run(
        [str(helm()), "template", release, str(chart), "--namespace", namespace, "--values", "-", *extra_args],
        input=yaml.safe_dump(dict(values)), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise ChartError(proc.stderr.strip() or f"helm template exited with {proc.returncode}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kinds(docs: Iterable[Mapping[str, Any]], kinds: Iterable[str]) -> list[dict[str, Any]]:
    wanted = set(kinds)
    return [dict(d) for d in docs if d.get("kind") in wanted]


def _plural(kind: str) -> str:
    return {"KopfPeering": "kopfpeerings", "CustomResourceDefinition": "customresourcedefinitions"}.get(
        kind, kind.lower() + "s")


async def apply(api: client.ApiClient, docs: Iterable[Mapping[str, Any]]) -> None:
    """Create each object, or replace it when it exists (as ``kubectl apply`` leaves it: the rendered
    content wins). CRDs go first and are waited for, so custom objects of them can follow."""
    objects = [dict(d) for d in docs]
    unknown = sorted({str(d.get("kind")) for d in objects} - set(OBJECT_KINDS))
    if unknown:
        raise ValueError(f"cannot apply objects of kind {', '.join(unknown)} here")
    crds = [d for d in objects if d["kind"] == "CustomResourceDefinition"]
    if crds:
        await apply_crds(api, crds)
    for doc in sorted((d for d in objects if d["kind"] != "CustomResourceDefinition"),
                      key=lambda d: OBJECT_KINDS.index(d["kind"])):
        await _create_or_replace(api, doc)


async def _create_or_replace(api: client.ApiClient, doc: dict[str, Any]) -> None:
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    meta = doc["metadata"]
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    scope = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    collection = f"{base}{scope}/{_plural(doc['kind'])}"

    async def call(method: str, path: str, body: Any = None) -> Any:
        # One path for every kind: the generated clients have a method per kind, the API one URL shape.
        return await api.call_api(
            path, method, body=body, header_params={"Content-Type": "application/json", "Accept": "application/json"},
            response_types_map={200: "object", 201: "object"}, auth_settings=["BearerToken"],
            _return_http_data_only=True)

    try:
        await call("POST", collection, doc)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = await call("GET", f"{collection}/{meta['name']}")
    await call("PUT", f"{collection}/{meta['name']}",
               {**doc, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}})


async def service_account_token(api: client.ApiClient, namespace: str, name: str,
                                seconds: int = TOKEN_SECONDS) -> str:
    """A token for the ServiceAccount from the TokenRequest API (what the kubelet mounts into a pod)."""
    request: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": seconds}}
    answer = await client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


def cluster_of(kubeconfig: str) -> tuple[str, str]:
    """(server URL, CA certificate in PEM) of the kubeconfig's current context."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    elif cluster.get("certificate-authority"):
        ca_path = Path(cluster["certificate-authority"])
        if not ca_path.is_absolute():
            ca_path = Path(kubeconfig).parent / ca_path
        ca = ca_path.read_text()
    else:
        raise ValueError(f"{kubeconfig}: the current cluster names no certificate authority")
    return str(cluster["server"]).rstrip("/"), ca


def write_token_kubeconfig(path: Path, *, server: str, ca_pem: str, token: str, namespace: str,
                           user: str) -> Path:
    """A kubeconfig that authenticates with ``token`` only (no client certificate, no exec plugin)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch keeps the mode of a file that already exists; the token must not be readable
    path.write_text(yaml.safe_dump(doc))
    return path


async def wait_until_allowed(api: client.ApiClient, user: str, *, verb: str, resource: str, namespace: str,
                             group: str = "", name: str | None = None, within: float = 10.0) -> None:
    """Wait until the authorizer has seen freshly written RBAC (a real cluster, too, applies a binding
    when its informer delivers it, not when the write returns). ``name`` is needed when the rule is
    limited by resourceNames: without one, such a rule never allows the request."""
    plural, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "resource": plural, "subresource": subresource, "group": group,
                  "namespace": namespace}
    if name:
        attributes["name"] = name
    review: Any = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                 "system:authenticated"],
        "resourceAttributes": attributes}}
    authz = client.AuthorizationV1Api(api)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        answer = await authz.create_subject_access_review(review)
        if answer.status.allowed:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{user} may still not {verb} {resource} in {namespace} after {within}s")
        await asyncio.sleep(0.05)


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def service_accounts(docs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The ServiceAccount each component runs as (component label -> name), from the rendered Deployments."""
    return {str(d["metadata"]["labels"]["app.kubernetes.io/component"]):
            str(d["spec"]["template"]["spec"]["serviceAccountName"])
            for d in of_kinds(docs, ["Deployment"])}


async def wait_for_bindings(api: client.ApiClient, docs: Iterable[Mapping[str, Any]], within: float = 10.0) -> None:
    """Wait until every ServiceAccount the rendered RoleBindings bind may do what its Role allows first:
    then the authorizer has seen both the Role and the binding."""
    docs = list(docs)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kinds(docs, ["Role"])}
    for binding in of_kinds(docs, ["RoleBinding"]):
        namespace = binding["metadata"]["namespace"]
        role = roles.get((namespace, binding["roleRef"]["name"]))
        # Subresources (scimusers/status) need the SubjectAccessReview's subresource field: pick a plain one.
        plain = [(rule, resource) for rule in (role or {}).get("rules", []) for resource in rule["resources"]
                 if "/" not in resource]
        if not plain:
            continue
        rule, resource = plain[0]
        for subject in binding.get("subjects", []):
            if subject["kind"] != "ServiceAccount":
                continue
            user = service_account_user(subject.get("namespace", namespace), subject["name"])
            await wait_until_allowed(api, user, verb=rule["verbs"][0], resource=resource, namespace=namespace,
                                     group=rule["apiGroups"][0], name=(rule.get("resourceNames") or [None])[0],
                                     within=within)
