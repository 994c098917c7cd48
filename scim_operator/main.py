"""``litellm-scim operator``: configure Kopf from the settings and run it in-process."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import SecretStr

from scim_common import kube
from scim_common.logs import setup_logging
from scim_common.settings import OperatorSettings
from scim_contract import API_GROUP, FINALIZER
from scim_operator import drift_sweep, kopf_patches, metrics
from scim_operator.bookkeeping import StatusDiffBase
from scim_operator.context import Operator
from scim_operator.handlers import build_registry
from scim_operator.litellm_api import LiteLLM
from scim_operator.resources import Resources
from scim_operator.secrets_api import Secrets
from scim_operator.state import Memory

log = logging.getLogger(__name__)

# Kopf's bookkeeping annotations live under the operator's own prefix, next to the endpoint's.
ANNOTATION_PREFIX = f"operator.{API_GROUP}"
# The most connections our API client (status writes, Secrets, reads) keeps open; Kopf's watches
# have their own. Each open TLS connection holds about 0.3 MB of buffers: a restart resuming
# thousands of resources opened all 100 the client allows by default, and the process kept that
# peak (20 MiB of RSS at 10,000 users). 16 calls in flight are as fast against the API server.
API_CONNECTIONS = 16


class ConfigurationError(Exception):
    pass


async def master_key(settings: OperatorSettings, secrets: Secrets) -> SecretStr:
    if settings.litellm_master_key is not None:
        return settings.litellm_master_key
    if not settings.litellm_master_key_secret:
        raise ConfigurationError(
            "no LiteLLM master key: set LITELLM_MASTER_KEY or --litellm-master-key-secret"
        )
    name, _, key = settings.litellm_master_key_secret.partition("/")
    if not name or not key:
        raise ConfigurationError("--litellm-master-key-secret must be NAME/KEY")
    try:
        value = await secrets.value(name, key)
    except ApiException as exc:
        raise ConfigurationError(
            f"cannot read Secret {settings.namespace}/{name}: HTTP {exc.status}"
        ) from None
    if not value:
        raise ConfigurationError(f"Secret {settings.namespace}/{name} has no key {key!r}")
    return SecretStr(value)


async def check_peering(api: client.ApiClient, settings: OperatorSettings) -> None:
    """The KopfPeering object must exist before the replicas start: Kopf does not create it, and a
    replica that finds none believes it is alone, so two replicas would both act. The chart (or
    ``litellm-scim dev``) creates it; the operator only reads it, with the chart's permissions."""
    try:
        await client.CustomObjectsApi(api).get_namespaced_custom_object(
            "kopf.dev", "v1", settings.namespace, "kopfpeerings", settings.peering
        )
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigurationError(
                f"KopfPeering {settings.namespace}/{settings.peering} not found (is Kopf's KopfPeering CRD "
                "installed?): the Helm chart creates both; or run with --standalone"
            ) from None
        if exc.status == 403:
            raise ConfigurationError(
                f"cannot get kopfpeerings {settings.peering!r} in namespace {settings.namespace}: forbidden"
            ) from None
        raise


def kopf_settings(settings: OperatorSettings, diffbase: StatusDiffBase) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.persistence.finalizer = FINALIZER
    # Kopf's progress in annotations: the CRD status schemas are the project's contract, and
    # Kopf's own status fields would be pruned by the API server anyway. The last handled spec is
    # the one status field declared for it (see bookkeeping).
    ks.persistence.progress_storage = diffbase.progress
    ks.persistence.diffbase_storage = diffbase
    # Only Kopf's warnings and errors become Kubernetes Events; our own changes are posted explicitly.
    ks.posting.level = logging.WARNING
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    ks.watching.connect_timeout = 10
    ks.networking.request_timeout = 60
    ks.peering.lifetime = settings.peering_lifetime
    # One namespace, named: nothing to discover. Scanning would list namespaces and CRDs cluster-wide,
    # which the chart's namespaced Roles (rightly) do not allow.
    ks.scanning.disabled = True
    return ks


async def operate(settings: OperatorSettings, *, stop_flag: Any = None, ready_flag: Any = None) -> int:
    if settings.kubeconfig:
        # Kopf's own login (via kubernetes_asyncio) reads the kubeconfig from the environment.
        os.environ["KUBECONFIG"] = settings.kubeconfig
    api = await kube.api_client(settings.kubeconfig, connections=API_CONNECTIONS)
    secrets = Secrets(api, settings.namespace)
    litellm: LiteLLM | None = None
    try:
        try:
            key = await master_key(settings, secrets)
            if not settings.standalone:
                await check_peering(api, settings)
        except ConfigurationError as exc:
            log.error(str(exc))
            return 2
        litellm = LiteLLM(
            settings.litellm_url,
            key,
            timeout=settings.litellm_timeout,
            concurrency=settings.litellm_concurrency,
        )
        op = Operator(
            settings=settings,
            litellm=litellm,
            resources=Resources(api, settings.namespace),
            secrets=secrets,
            memory=Memory(),
            diffbase=StatusDiffBase(prefix=ANNOTATION_PREFIX),
        )
        metrics.track_managed(lambda: len(op.memory.users.ready), lambda: len(op.memory.teams.ids))
        metrics.serve(settings.metrics_port)
        # Equal priorities would make every replica active: a random one makes exactly one active.
        priority = settings.peering_priority or random.randint(1, 2**31 - 1)  # noqa: S311
        log.info(
            "operator starting",
            extra={
                "fields": {
                    "namespace": settings.namespace,
                    "litellm_url": settings.litellm_url,
                    "peering": None if settings.standalone else settings.peering,
                    "priority": priority,
                }
            },
        )
        kopf_patches.quiet_toggle_sets()
        kopf_patches.lean_bodies()
        drift_sweep.watch(op.activity)
        await kopf.operator(
            registry=build_registry(op),
            settings=kopf_settings(settings, op.diffbase),
            namespaces=[settings.namespace],
            standalone=settings.standalone,
            peering_name=None if settings.standalone else settings.peering,
            priority=priority,
            liveness_endpoint=f"http://0.0.0.0:{settings.probe_port}/healthz"
            if settings.probe_port
            else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
        return 0
    finally:
        if litellm is not None:
            await litellm.close()
        await api.close()


def run(settings: OperatorSettings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(operate(settings))
    except KeyboardInterrupt:
        return 0
