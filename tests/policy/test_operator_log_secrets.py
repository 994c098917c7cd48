"""A real operator process at ``--log-level debug``, reading the master key from a Secret and delivering
virtual keys into Secrets, never logs the master key or a key: neither as text nor base64-encoded the way
the Kubernetes API carries a Secret's values."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import put_policy, secret_data
from product_access import ChartAccess

import scim_contract as c
from litellm_scim import chart, peers

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

MASTER_SECRET, MASTER_KEY_FIELD = "litellm-master", "masterkey"


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    return [namespace]


def b64(text: str) -> str:
    """How a Secret's value travels in an API request or response body."""
    return base64.b64encode(text.encode()).decode()


async def grant_master_key_secret(api: client.ApiClient, namespace: str, operator_user: str) -> None:
    """What a platform admin adds for ``--litellm-master-key-secret``: ``get`` on that one Secret."""
    account = operator_user.rsplit(":", 1)[1]
    name = f"{account}-master-key"
    await chart.apply(api, [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [MASTER_SECRET],
                    "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ])
    await chart.wait_until_allowed(api, operator_user, verb="get", resource="secrets", namespace=namespace,
                                   name=MASTER_SECRET)


@pytest.fixture
def operator_without_key_in_env(namespace: str, chart_access: ChartAccess, litellm: peers.LiteLLM,
                                tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """The operator as ``start_operator`` runs it, except that LITELLM_MASTER_KEY is not set: the key
    can only come from ``--litellm-master-key-secret``."""
    started: list[OperatorProcess] = []

    def start(*flags: str) -> OperatorProcess:
        op = OperatorProcess(namespace=namespace, kubeconfig=chart_access.operator_kubeconfig,
                             litellm_url=litellm.url, master_key="", log_path=tmp_path / "operator.log")
        op.probe_port, op.metrics_port = peers.free_port(), peers.free_port()
        env = {k: v for k, v in os.environ.items()
               if k != "LITELLM_MASTER_KEY" and not k.startswith("LITELLM_SCIM_")}
        cmd = [sys.executable, "-m", "litellm_scim.cli", "operator", "--namespace", namespace,
               "--kubeconfig", op.kubeconfig, "--litellm-url", op.litellm_url, "--standalone",
               "--probe-port", str(op.probe_port), "--metrics-port", str(op.metrics_port),
               "--drift-interval", "600", "--litellm-timeout", "20", *flags]
        with op.log_path.open("ab") as out:
            op.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append(op)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert op.proc.poll() is None, f"operator exited with {op.proc.returncode}: {op.log_tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{op.probe_port}/healthz", timeout=1):
                    return op
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"operator not live within 30s: {op.log_tail()}")

    yield start
    for op in started:
        op.stop()


async def test_debug_log_holds_no_master_key_and_no_virtual_key(
    operator_without_key_in_env: Callable[..., OperatorProcess], kube_api: client.ApiClient, kube_rw: Kube,
    admin: Admin, chart_access: ChartAccess, litellm: peers.LiteLLM, ids: Callable[[str], str], namespace: str,
) -> None:
    await client.CoreV1Api(kube_api).create_namespaced_secret(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": MASTER_SECRET}, "data": {MASTER_KEY_FIELD: b64(litellm.master_key)}})
    await grant_master_key_secret(kube_api, namespace, chart_access.operator_user)
    operator = operator_without_key_in_env("--log-level", "debug", "--log-format", "text",
                                           "--litellm-master-key-secret", f"{MASTER_SECRET}/{MASTER_KEY_FIELD}")

    ann, group = ids("ann"), ids("eng")
    await put_policy(kube_rw, "engineering", {
        "selector": {"displayNamePattern": "engineering*"},
        "keys": {"perMember": {"enabled": True, "models": ["gpt-4o"]},
                 "perTeam": {"enabled": True, "secretNamespaces": [namespace]}},
    })
    await kube_rw.create(c.USER, ann, {"userName": f"{ann}@example.com"})
    await kube_rw.create(c.GROUP, group, {"displayName": f"Engineering {namespace}"})
    await kube_rw.set_members(group, [ann])
    member = await eventually(lambda: secret_data(kube_rw, f"litellm-key-{group}-{ann}"), within=60,
                              what="the member's key Secret")
    team = await eventually(lambda: secret_data(kube_rw, f"litellm-team-key-{group}"), within=60,
                            what="the team's key Secret")
    keys = [member["api-key"], team["api-key"]]
    for key in keys:  # the operator really used the master key from the Secret: the keys work
        assert await admin.models_status(key) == 200
    # A rotation writes a second key into each Secret (a replace of the Secret, not a create).
    await kube_rw.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.GROUP.plural, group,
        {"metadata": {"annotations": {f"{c.API_GROUP}/rotate-keys": "1"}}},
        _content_type="application/merge-patch+json")
    rotated = await eventually(
        lambda: _changed(kube_rw, f"litellm-team-key-{group}", team["api-key"]), within=60, what="a rotated key")
    keys.append(rotated)
    operator.stop()

    text = operator.log_text()
    assert " DEBUG " in text, "the process logged at debug"
    secrets = {"master key": litellm.master_key, **{f"key {i}": key for i, key in enumerate(keys)}}
    leaked = sorted(f"{name} ({how})" for name, value in secrets.items()
                    for how, form in (("text", value), ("base64", b64(value))) if form in text)
    assert not leaked, f"in the operator's log: {leaked}"
    # Kopf's debug lines keep their words but not the bodies, diffs and patches they would append.
    dumps = re.findall(r"^.*(?:in progress|diff|with): [\[{(].*$", text, flags=re.MULTILINE)
    assert not dumps, dumps[:3]


async def _changed(kube: Kube, name: str, old: str) -> str | None:
    data = await secret_data(kube, name)
    key = (data or {}).get("api-key")
    return key if key and key != old else None
