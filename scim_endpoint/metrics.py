"""Prometheus metrics of the endpoint, in a registry of its own (several apps can share a process)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from scim_endpoint.store import Store


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scim_requests", "SCIM requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "scim_request_seconds", "Time to answer a SCIM request", ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        cached = Gauge("scim_cached_objects", "Objects held in the watch-backed cache", ["kind"],
                       registry=self.registry)
        for informer in (store.users, store.groups, store.shards):
            cached.labels(informer.kind).set_function(lambda i=informer: len(i.objects))  # type: ignore[misc]
        ready = Gauge("scim_cache_synced", "1 when every cache has finished its initial list", registry=self.registry)
        ready.set_function(lambda: 1.0 if store.ready else 0.0)

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app
