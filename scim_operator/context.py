"""The things every controller needs, passed explicitly instead of living in globals."""

from __future__ import annotations

import inspect
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import kopf

from scim_common import kube
from scim_common.settings import OperatorSettings
from scim_contract import ResourceKind
from scim_operator import metrics
from scim_operator.bookkeeping import StatusDiffBase
from scim_operator.drift_sweep import Activity
from scim_operator.litellm_api import LiteLLM, LiteLLMError
from scim_operator.objects import failed_status
from scim_operator.resources import Resources, emit
from scim_operator.secrets_api import Secrets
from scim_operator.state import Memory

log = logging.getLogger(__name__)


@dataclass
class Operator:
    settings: OperatorSettings
    litellm: LiteLLM
    resources: Resources
    secrets: Secrets
    memory: Memory
    diffbase: StatusDiffBase
    # Whether Kopf lets this replica act (peering), for the work Kopf does not schedule itself.
    activity: Activity = field(default_factory=Activity)

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def jittered_drift_interval(self) -> float:
        # +-20 %: thousands of resources created together must not all hit LiteLLM in the same second.
        return float(self.settings.drift_interval) * random.uniform(0.8, 1.2)  # noqa: S311


async def connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    """Kopf's credentials from the same source as our own client: --kubeconfig, in-cluster, $KUBECONFIG."""
    api = await kube.api_client(kubeconfig)
    async with api:
        cfg = api.configuration
        header: Any = cfg.get_api_key_with_prefix("BearerToken")
        if inspect.isawaitable(header):
            header = await header
        scheme, _, token = str(header or "").partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
        return kopf.ConnectionInfo(
            server=str(cfg.host),
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme if token else None,
            token=token or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )


class NotOwned(Exception):
    """The LiteLLM object with our id carries no (or another resource's) ownership tag."""


def retry_later(exc: LiteLLMError, retry: int) -> kopf.TemporaryError:
    """Backoff for Kopf: quick while LiteLLM is briefly away, slower when it refuses the request."""
    delay = min(30.0, 1.0 * 2 ** min(retry, 5)) if exc.transient else 60.0
    return kopf.TemporaryError(str(exc), delay=delay)


def failure_reason(exc: LiteLLMError) -> str:
    return "LiteLLMUnavailable" if exc.transient else "LiteLLMRejected"


async def reconcile_failed(
    op: Operator, kind: ResourceKind, label: str, body: Any, exc: NotOwned | LiteLLMError, retry: int
) -> None:
    """Report a failed reconcile on the resource (metrics, ``Synced=False``, an Event for NotOwned).
    A resource we may not touch is final until something changes; a LiteLLM error is retried."""
    name = body["metadata"]["name"]
    if isinstance(exc, NotOwned):
        metrics.RECONCILES.labels(label, "not_owned").inc()
        await op.resources.update_status(kind, name, failed_status("NotOwned", str(exc)))
        emit(body, "NotOwned", str(exc), warning=True)
        return
    metrics.RECONCILES.labels(label, "error").inc()
    metrics.FAILURES.labels(label, failure_reason(exc)).inc()
    await op.resources.update_status(kind, name, failed_status(failure_reason(exc), str(exc)))
    raise retry_later(exc, retry) from None


async def drift_check_failed(op: Operator, kind: ResourceKind, name: str, exc: LiteLLMError) -> None:
    """A drift check that could not ask LiteLLM: logged, and ``Synced=False`` with the reason."""
    log.warning(f"drift check of {kind.kind} failed", extra={"fields": {"name": name, "error": str(exc)}})
    await op.resources.update_status(kind, name, failed_status(failure_reason(exc), str(exc)))


def drift_events(body: Any, findings: list[str], corrected: str | None) -> None:
    """The Events of a drift check that found something; ``corrected``: what was corrected, if so."""
    if findings:
        text = "; ".join(findings)
        emit(body, "DriftDetected", text, warning=True)
        if corrected is not None:
            emit(body, "DriftCorrected", f"{corrected} corrected: {text}")
