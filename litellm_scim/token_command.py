"""``litellm-scim token create|list|revoke``: manage the SCIM bearer tokens in the Secret the endpoint
reads (its format and the reads and writes are ``scim_common.tokens``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException

from scim_common import kube
from scim_common.tokens import DEFAULT_SECRET, TokenError, create_token, list_tokens, revoke_token

# --- the command line ----------------------------------------------------------------------------


def tenant_url(base_url: str | None) -> str | None:
    """The SCIM tenant URL an IdP needs: the base URL, with ``/scim/v2`` added when only a host is given."""
    if not base_url:
        return None
    url = base_url.rstrip("/")
    path = url.split("://", 1)[-1].partition("/")[2]
    return url if path else f"{url}/scim/v2"


async def _connected(ns: argparse.Namespace) -> int:
    api = await kube.api_client(ns.kubeconfig)
    async with api:
        if ns.action == "create":
            name, token = await create_token(api, ns.namespace, ns.token_secret, ns.name)
            url = tenant_url(ns.base_url)
            print(f"Created SCIM token {name!r} in Secret {ns.namespace}/{ns.token_secret}.")
            if url:
                print(f"SCIM tenant URL: {url}")
            else:
                print("SCIM tenant URL: https://<your SCIM endpoint host>/scim/v2 "
                      "(pass --base-url or set LITELLM_SCIM_BASE_URL to print it here)")
            print(f"Secret token:    {token}")
            print("The token is shown only this once: paste it into your identity provider now.")
        elif ns.action == "list":
            infos = await list_tokens(api, ns.namespace, ns.token_secret)
            if not infos:
                print(f"No tokens in Secret {ns.namespace}/{ns.token_secret}.")
            else:
                width = max(4, *(len(i.name) for i in infos))
                print(f"{'NAME':<{width}}  CREATED")
                for info in infos:
                    print(f"{info.name:<{width}}  {info.created or 'unknown'}")
        else:
            await revoke_token(api, ns.namespace, ns.token_secret, ns.name)
            print(f"Revoked SCIM token {ns.name!r} (Secret {ns.namespace}/{ns.token_secret}).")
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"litellm-scim token: error: {message}", file=sys.stderr)
    return code


def run(ns: argparse.Namespace) -> int:
    """``litellm-scim token create|list|revoke``; every failure is one line on stderr and exit code 1."""
    ns.namespace = ns.namespace or os.environ.get("LITELLM_SCIM_NAMESPACE", "default")
    ns.token_secret = ns.token_secret or os.environ.get("LITELLM_SCIM_TOKEN_SECRET", DEFAULT_SECRET)
    ns.base_url = ns.base_url or os.environ.get("LITELLM_SCIM_BASE_URL")
    if ns.action == "revoke" and not ns.name:
        return _fail("revoke needs the NAME of the token (see `litellm-scim token list`)", 2)
    if ns.action == "list" and ns.name:
        return _fail("list takes no NAME", 2)
    if ns.kubeconfig and not os.path.isfile(ns.kubeconfig):
        return _fail(f"kubeconfig not found: {ns.kubeconfig}")
    try:
        return asyncio.run(_connected(ns))
    except TokenError as exc:
        return _fail(str(exc))
    except ConfigException as exc:
        return _fail(f"no usable kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        return _fail(f"cannot reach the Kubernetes API server: {detail}")
    except ApiException as exc:
        return _fail(f"Kubernetes API error: {kube.status_message(exc)}")
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
