"""``litellm-scim endpoint``: serve the SCIM API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from aiohttp import web

from scim_common import kube
from scim_common.logs import setup_logging
from scim_common.settings import EndpointSettings
from scim_endpoint.app import create_app
from scim_endpoint.auth import Tokens
from scim_endpoint.kubeapi import skip_environment_lookups
from scim_endpoint.limits import Limits
from scim_endpoint.metrics import Metrics
from scim_endpoint.store import Store

log = logging.getLogger(__name__)


def run(settings: EndpointSettings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0


async def serve(settings: EndpointSettings, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        api = await kube.api_client(settings.kubeconfig)
    except Exception as exc:
        log.error("cannot load the Kubernetes configuration: %s", exc)
        return 2
    skip_environment_lookups(api)
    async with api:
        store = Store(api, settings.namespace, unique_group_external_id=settings.unique_group_external_id)
        tokens = Tokens(api, settings.namespace, settings.token_secret)
        metrics = Metrics(store)
        store.start()
        tokens.start()
        caps = Limits(max_filter_length=settings.max_filter_length, max_filter_terms=settings.max_filter_terms,
                      max_attributes=settings.max_attributes, max_patch_operations=settings.max_patch_operations,
                      max_json_depth=settings.max_json_depth, max_object_bytes=settings.max_object_bytes)
        app = create_app(store, tokens, max_results=settings.max_results, max_body_bytes=settings.max_body_bytes,
                         base_url=settings.base_url, metrics=metrics, caps=caps)
        runners = [web.AppRunner(app, access_log=None)]
        if settings.metrics_port:
            runners.append(web.AppRunner(metrics.app(), access_log=None))
        try:
            await runners[0].setup()
            await web.TCPSite(runners[0], settings.host, settings.port).start()
            if len(runners) > 1:
                await runners[1].setup()
                await web.TCPSite(runners[1], settings.host, settings.metrics_port).start()
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            await _shutdown(runners, store, tokens)
            return 1
        freezer = asyncio.create_task(_freeze_after_sync(store))
        log.info("SCIM endpoint listening", extra={"fields": {
            "host": settings.host, "port": settings.port, "namespace": settings.namespace,
            "metrics_port": settings.metrics_port}})
        await stop.wait()
        log.info("shutting down")
        freezer.cancel()
        await _shutdown(runners, store, tokens)
    return 0


async def _freeze_after_sync(store: Store) -> None:
    """The initial cache lives as long as the process: take it out of the cyclic garbage collector's
    full scans, which otherwise walk every cached object (pauses of ~100 ms with 10,000 users)."""
    await store.wait_ready()
    gc.collect()
    gc.freeze()
    log.info("caches synced", extra={"fields": {"users": len(store.users.objects),
                                                "groups": len(store.groups.objects)}})


async def _shutdown(runners: list[web.AppRunner], store: Store, tokens: Tokens) -> None:
    for runner in runners:
        await runner.cleanup()
    await tokens.stop()
    await store.stop()
