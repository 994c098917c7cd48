"""The aiohttp application: routes under ``/scim/v2``, authentication, SCIM error bodies, ETags."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, web
from kubernetes_asyncio.client.exceptions import ApiException

from scim_endpoint import filters, limits, schema
from scim_endpoint.auth import Tokens
from scim_endpoint.errors import ScimError
from scim_endpoint.limits import Limits
from scim_endpoint.metrics import Metrics
from scim_endpoint.resources import TYPES, ResourceType, by_endpoint
from scim_endpoint.service import Query, Service
from scim_endpoint.store import Store, Unavailable

log = logging.getLogger(__name__)

BASE = "/scim/v2"
SCIM_JSON = "application/scim+json"
_ENDPOINTS = {name.lower(): name for name in (
    *(rt.endpoint for rt in TYPES), "ServiceProviderConfig", "serviceConfiguration", "Schemas", "ResourceTypes",
    ".search")}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens", Tokens)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
SETTINGS: web.AppKey[dict[str, Any]] = web.AppKey("settings", dict)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type=SCIM_JSON, headers=headers)


def error_response(exc: ScimError) -> web.Response:
    return scim_response(exc.body(), exc.status)


# ---- middlewares ---------------------------------------------------------------------------------
@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app.get(METRICS)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        if metrics is not None:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            endpoint = request.match_info.get("endpoint")
            if endpoint:
                route = route.replace("{endpoint}", _ENDPOINTS.get(endpoint.lower(), endpoint))
            route = route.replace("{slash}", "")
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)


@web.middleware
async def scim_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a SCIM Error body, never as a traceback."""
    try:
        return await handler(request)
    except ScimError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS]["max_body_bytes"]
        return error_response(ScimError(413, f"Request body larger than {limit} bytes"))
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(ScimError(405, f"Method {request.method} not allowed on {request.path}"))
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPNotFound:
        return error_response(ScimError(404, f"No such endpoint: {request.path}"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(ScimError(exc.status, exc.reason))
    except (Unavailable, ApiException, TimeoutError, ClientError, OSError) as exc:
        log.warning("storage unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(ScimError(503, "The Kubernetes API is not available; retry later"))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(ScimError(500, "Internal server error"))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(BASE):
        if not (request.app[STORE].ready and request.app[TOKENS].ready):
            raise ScimError(503, "The endpoint is starting: its caches are not synced yet")
        if not request.app[TOKENS].accepts(request.headers.get("Authorization")):
            raise ScimError(401, "Missing or invalid bearer token")
    return await handler(request)


# ---- request helpers ------------------------------------------------------------------------------
async def json_body(request: web.Request) -> Any:
    kind = request.content_type
    if request.body_exists and kind not in (SCIM_JSON, "application/json", "application/octet-stream", "text/plain"):
        raise ScimError(415, f"Unsupported Content-Type {kind}; send {SCIM_JSON} or application/json")
    raw = await request.read()
    if not raw.strip():
        raise ScimError(400, "The request body is empty", "invalidSyntax")
    return limits.json_loads(raw, request.app[LIMITS])


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ScimError(400, f"{name} must be an integer", "invalidValue")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ScimError(400, f"{name} must be an integer", "invalidValue") from None


def _names(value: Any, name: str) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [a.strip() for a in value.split(",") if a.strip()]
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return [a.strip() for a in value if a.strip()]
    raise ScimError(400, f"{name} must be a list of attribute names", "invalidValue")


def query_from(params: Any, caps: Limits) -> Query:
    """A list query from URL parameters or a SearchRequest body (RFC 7644 section 3.4.2/3.4.3)."""
    filter_ = params.get("filter")
    if filter_ is not None and not isinstance(filter_, str):
        raise ScimError(400, "filter must be a string", "invalidFilter")
    if filter_:
        limits.check_filter_length(filter_, caps)
    sort_by = params.get("sortBy")
    if sort_by is not None and not isinstance(sort_by, str):
        raise ScimError(400, "sortBy must be a string", "invalidValue")
    order = params.get("sortOrder") or "ascending"
    if not isinstance(order, str) or order.lower() not in ("ascending", "descending"):
        raise ScimError(400, "sortOrder must be ascending or descending", "invalidValue")
    attributes = _names(params.get("attributes"), "attributes")
    excluded = _names(params.get("excludedAttributes"), "excludedAttributes")
    limits.check_attribute_count(attributes, "attributes", caps)
    limits.check_attribute_count(excluded, "excludedAttributes", caps)
    return Query(
        filter=filter_ or None, start_index=_int(params.get("startIndex"), "startIndex") or 1,
        count=_int(params.get("count"), "count"), sort_by=sort_by or None, sort_order=order.lower(),
        attributes=attributes, excluded=excluded,
    )


def base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].get("base_url")
    if configured:
        return str(configured).rstrip("/")
    return f"{request.scheme}://{request.host}{BASE}"


def projected(request: web.Request, resource: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    q = query_from(request.query, request.app[LIMITS])
    if q.attributes is None and q.excluded is None:
        return resource
    return filters.project(resource, q.attributes, q.excluded, rt.name)


def not_modified(request: web.Request, resource: dict[str, Any]) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or resource["meta"]["version"].removeprefix("W/") in tags


# ---- handlers ------------------------------------------------------------------------------------
# One handler per operation for every resource type: the type is the one served at the endpoint the
# route matched (``/Users``, ``/groups``...).
def _type(request: web.Request) -> ResourceType:
    rt = by_endpoint(request.match_info["endpoint"])
    assert rt is not None  # the routes are made from the types
    return rt


async def create(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    rt = _type(request)
    resource = await request.app[SERVICE].create(rt, body, base_url(request))
    return _with_etag(projected(request, resource, rt), resource, 201, Location=resource["meta"]["location"])


async def get(request: web.Request) -> web.StreamResponse:
    rt = _type(request)
    resource = await request.app[SERVICE].get(rt, request.match_info["id"], base_url(request))
    if not_modified(request, resource):
        return web.Response(status=304, headers={"ETag": resource["meta"]["version"]})
    return _with_etag(projected(request, resource, rt), resource)


async def list_(request: web.Request) -> web.StreamResponse:
    query = query_from(request.query, request.app[LIMITS])
    result = await request.app[SERVICE].search([_type(request)], query, base_url(request))
    return scim_response(result)


async def search(request: web.Request) -> web.StreamResponse:
    """POST .search on a type's endpoint, or on the base path for every type."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ScimError(400, "A SearchRequest must be a JSON object", "invalidSyntax")
    rt = by_endpoint(request.match_info["endpoint"])
    types = list(TYPES) if rt is None else [rt]
    query = query_from(body, request.app[LIMITS])
    return scim_response(await request.app[SERVICE].search(types, query, base_url(request)))


async def replace(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    rt = _type(request)
    resource = await request.app[SERVICE].replace(rt, request.match_info["id"], body, base_url(request),
                                                  request.headers.get("If-Match"))
    return _with_etag(projected(request, resource, rt), resource)


async def patch(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    rt = _type(request)
    resource = await request.app[SERVICE].patch(rt, request.match_info["id"], body, base_url(request),
                                                request.headers.get("If-Match"))
    # Entra expects 204 for group PATCH; a client asking for attributes gets them (RFC 7644 3.5.2).
    if rt.patch_no_content and "attributes" not in request.query and "excludedAttributes" not in request.query:
        return web.Response(status=204, headers={"ETag": resource["meta"]["version"]})
    return _with_etag(projected(request, resource, rt), resource)


async def delete(request: web.Request) -> web.StreamResponse:
    await request.app[SERVICE].delete(_type(request), request.match_info["id"], request.headers.get("If-Match"))
    return web.Response(status=204)


def _with_etag(body: dict[str, Any], resource: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    return scim_response(body, status, {"ETag": resource["meta"]["version"], **headers})


def _listing(docs: list[dict[str, Any]]) -> web.Response:
    """A ListResponse of every discovery document, on one page."""
    return scim_response({"schemas": [schema.LIST_URN], "totalResults": len(docs), "itemsPerPage": len(docs),
                          "startIndex": 1, "Resources": docs})


async def service_provider_config(request: web.Request) -> web.StreamResponse:
    return scim_response(schema.service_provider_config(base_url(request), request.app[SERVICE].max_results))


async def schemas(request: web.Request) -> web.StreamResponse:
    return _listing(schema.schemas(base_url(request)))


async def schema_by_id(request: web.Request) -> web.StreamResponse:
    for doc in schema.schemas(base_url(request)):
        if doc["id"] == request.match_info["id"]:
            return scim_response(doc)
    raise ScimError(404, f"Schema {request.match_info['id']} not found")


async def resource_types(request: web.Request) -> web.StreamResponse:
    return _listing(schema.resource_types(base_url(request)))


async def resource_type_by_id(request: web.Request) -> web.StreamResponse:
    for doc in schema.resource_types(base_url(request)):
        if doc["id"] == request.match_info["id"] or doc.get("name") == request.match_info["id"]:
            return scim_response(doc)
    raise ScimError(404, f"ResourceType {request.match_info['id']} not found")


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    ready = request.app[STORE].ready and request.app[TOKENS].ready
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def _path(endpoint: str, rest: str = "") -> str:
    """A route under the base path whose endpoint name matches in any case and that tolerates a
    trailing slash, as several IdP clients send ``/users`` or ``/Users/?filter=``."""
    name = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in endpoint)
    path = f"{BASE}/{{endpoint:{name}}}"
    if rest:
        path += f"/{rest}"
    return path + "{slash:/?}"


def create_app(store: Store, tokens: Tokens, *, max_results: int = 1000, max_body_bytes: int = 1_048_576,
               base_url: str | None = None, metrics: Metrics | None = None,
               caps: Limits | None = None) -> web.Application:
    app = web.Application(middlewares=[observe, scim_errors, authenticate], client_max_size=max_body_bytes)
    caps = caps or Limits()
    app[STORE] = store
    app[TOKENS] = tokens
    app[LIMITS] = caps
    app[SERVICE] = Service(store, max_results, caps)
    app[SETTINGS] = {"base_url": base_url, "max_body_bytes": max_body_bytes}
    if metrics is not None:
        app[METRICS] = metrics
    r = app.router
    for rt in TYPES:
        collection, item = _path(rt.endpoint), _path(rt.endpoint, "{id:[^/]+}")
        r.add_post(collection, create)
        r.add_get(collection, list_, allow_head=False)
        r.add_post(_path(rt.endpoint, ".search"), search)
        r.add_get(item, get, allow_head=False)
        r.add_put(item, replace)
        r.add_patch(item, patch)
        r.add_delete(item, delete)
    r.add_post(_path(".search"), search)
    # "serviceConfiguration" is what Microsoft's SCIM reference client asks for.
    r.add_get(_path("ServiceProviderConfig"), service_provider_config, allow_head=False)
    r.add_get(_path("serviceConfiguration"), service_provider_config, allow_head=False)
    r.add_get(_path("Schemas"), schemas, allow_head=False)
    r.add_get(_path("Schemas", "{id:[^/]+}"), schema_by_id, allow_head=False)
    r.add_get(_path("ResourceTypes"), resource_types, allow_head=False)
    r.add_get(_path("ResourceTypes", "{id:[^/]+}"), resource_type_by_id, allow_head=False)
    r.add_get("/healthz", healthz, allow_head=False)
    r.add_get("/readyz", readyz, allow_head=False)
    return app
