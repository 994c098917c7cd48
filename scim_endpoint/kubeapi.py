"""Tuning of the Kubernetes API connection the endpoint writes through."""

from __future__ import annotations

import os

from kubernetes_asyncio import client

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NETRC")


def skip_environment_lookups(api: client.ApiClient) -> None:
    """kubernetes_asyncio's HTTP session trusts the environment, so aiohttp looks up ~/.netrc and the
    proxy variables in a worker thread on EVERY API call (two thread hops per write). When no proxy
    or netrc is configured there is nothing to find: turn the lookups off."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    session = getattr(api.rest_client, "pool_manager", None)
    if session is not None and hasattr(session, "_trust_env"):
        session._trust_env = False
