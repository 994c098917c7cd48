"""The product's identities in tests: the chart's ServiceAccounts, and the API server's refusals of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litellm_scim import peers

# Release name of the chart installs the tests make: the ServiceAccounts are <RELEASE>-litellm-scim-operator-*.
RELEASE = "scim"


@dataclass(frozen=True)
class ChartAccess:
    """Kubeconfigs of the chart's two ServiceAccounts in the test namespace (TokenRequest tokens).
    The product is never started with the admin identity: only setup and inspection use that."""

    endpoint_kubeconfig: str
    operator_kubeconfig: str
    endpoint_user: str
    operator_user: str
    peering: str


def apiserver_log(cluster: peers.KubeCluster) -> Path | None:
    """The local API server's log (None for a cluster found running: its log is not ours to read)."""
    return cluster.state_dir / "apiserver.log" if cluster.started_here and cluster.state_dir else None


def product_denials(log: Path, start: int, release: str = RELEASE) -> list[str]:
    """The refusals logged since byte ``start`` for the ServiceAccounts of the chart's release."""
    with log.open("rb") as f:
        f.seek(start)
        fresh = f.read().decode(errors="replace")
    marker = f':{release}-litellm-scim-operator-'
    return [line.split("RBAC DENY ", 1)[1] for line in fresh.splitlines() if "RBAC DENY" in line and marker in line]
