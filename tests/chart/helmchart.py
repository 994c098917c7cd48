"""Rendering the Helm chart with `helm template` and reading the manifests it produces."""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from litellm_scim import chart
from scim_common import tokens
from scim_contract import API_GROUP, USER

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "litellm-scim-operator"

# What every install must provide (the chart refuses to render without them).
REQUIRED_VALUES: dict[str, Any] = {
    "litellm": {
        "url": "http://litellm.litellm.svc.cluster.local:4000",
        "masterKeySecret": {"name": "litellm-master", "key": "masterkey"},
    }
}


# What a SCIM token looks like (`litellm-scim token create`, the endpoint's initial token): no
# rendered manifest and no release record may ever contain one.
TOKEN_PATTERN = re.compile(re.escape(tokens.TOKEN_PREFIX) + r"[A-Za-z0-9_-]{16,}")


class RenderError(Exception):
    """`helm template` refused the values; the message is helm's stderr."""


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Manifests:
    docs: list[dict[str, Any]]
    release: str
    namespace: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def one(self, kind: str, component: str | None = None, name: str | None = None) -> dict[str, Any]:
        found = [
            d for d in self.of_kind(kind)
            if (component is None
                or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
            and (name is None or d["metadata"]["name"] == name)
        ]
        assert len(found) == 1, f"expected one {kind} (component={component}, name={name}), got {len(found)}"
        return found[0]

    def deployment(self, component: str) -> dict[str, Any]:
        return self.one("Deployment", component)

    def container(self, component: str) -> dict[str, Any]:
        containers = self.deployment(component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        result: dict[str, Any] = containers[0]
        return result


Render = Callable[..., Manifests]


def run_helm_template(helm: Path, chart: Path, values: dict[str, Any], *, release: str, namespace: str,
                      tmp: Path, extra_args: tuple[str, ...] = ()) -> str:
    values_file = tmp / f"values-{abs(hash(yaml.safe_dump(values)))}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [str(helm), "template", release, str(chart), "--namespace", namespace, "-f", str(values_file),
         *extra_args],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return proc.stdout


async def service_account_kubeconfig(api: client.ApiClient, admin_kubeconfig: str, namespace: str, account: str,
                                     path: Path) -> str:
    """A kubeconfig that acts as one of the chart's ServiceAccounts (a TokenRequest token, what the
    kubelet mounts into the pod), returned once the authorizer has seen the account's RoleBinding.
    Its Role and RoleBinding must have been applied (by helm, or by ``chart.apply``)."""
    token = await chart.service_account_token(api, namespace, account)
    server, ca = chart.cluster_of(admin_kubeconfig)
    chart.write_token_kubeconfig(path, server=server, ca_pem=ca, token=token, namespace=namespace, user=account)
    # Both of the chart's accounts may list ScimUsers: seeing that means the binding is in force.
    await chart.wait_until_allowed(api, chart.service_account_user(namespace, account), verb="list",
                                   resource=USER.plural, group=API_GROUP, namespace=namespace)
    return str(path)
