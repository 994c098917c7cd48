"""Connecting to the Kubernetes API (kubernetes_asyncio), and saying in one line what the cluster refused."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException


async def api_client(kubeconfig: str | None = None, *, connections: int | None = None) -> client.ApiClient:
    """An API client from an explicit kubeconfig, the in-cluster service account, or $KUBECONFIG.
    ``connections``: the most it keeps open to the API server (kubernetes_asyncio's default, 100,
    when None); each open watch holds one."""
    cfg = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    if connections is not None:
        cfg.connection_pool_maxsize = connections
    return client.ApiClient(configuration=cfg)


# --- refusals (401, 403) as one line for a person -------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A call to the API server in RBAC's terms: what a Role would have to allow for it to pass."""

    verb: str
    resource: str  # plural, with "/subresource" when there is one
    namespace: str | None = None  # None: cluster scope
    name: str | None = None

    def __str__(self) -> str:
        # RBAC never matches the create of an object by name (it does not exist yet), so naming it
        # would invite a Role with resourceNames that still refuses it. A subresource of a named
        # object (serviceaccounts/token) does carry the name.
        creates_object = self.verb == "create" and "/" not in self.resource
        named = f' "{self.name}"' if self.name and not creates_object else ""
        where = f"in namespace {self.namespace}" if self.namespace else "at cluster scope"
        return f"{self.verb} {self.resource}{named} {where}"


# kube-apiserver's wording of a refusal (k8s.io/apiserver: responsewriters.forbiddenMessage), with the
# authorizer's reason appended after ": " when it gives one.
_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]*)" in API group "[^"]*"'
    r'(?: in the namespace "(?P<namespace>[^"]*)"| at the cluster scope)(?:: (?P<reason>.*))?$'
)


# The RBAC API's refusal of a Role or binding granting more than its writer holds (kube-apiserver's
# privilege-escalation check): the missing rules follow, one per line.
_ESCALATION = re.compile(r'user "(?P<user>[^"]*)".*? is attempting to grant RBAC permissions not currently held:'
                         r"\s*(?P<rules>.*)", re.S)


def status_body(exc: ApiException) -> dict[str, Any]:
    """The Status object the API server sent with an error, or {}."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def status_message(exc: ApiException) -> str:
    """The API server's own explanation of an error, without the response headers."""
    return str(status_body(exc).get("message") or exc.reason or f"HTTP {exc.status}")


def refusal(exc: ApiException, request: Request) -> str | None:
    """One line naming what the cluster refused and to whom, for a 401 or 403; None otherwise.

    ``request`` is what the caller asked for; what the API server says it refused (verb, resource,
    namespace, name, user) wins, since that is what a Role has to grant."""
    if exc.status == 401:
        return f"cannot {request}: the cluster rejected the credentials (401 Unauthorized)"
    if exc.status != 403:
        return None
    body = status_body(exc)
    message = str(body.get("message") or "")
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    escalation = _ESCALATION.search(message)
    if escalation is not None:
        return _escalation(request, details, escalation)
    found = _FORBIDDEN.search(message)
    if found is None:  # another authorizer's wording: keep ours and quote theirs, on one line
        return f"cannot {request} (forbidden: {' '.join(status_message(exc).split())})"
    refused = Request(verb=found["verb"], resource=found["resource"], namespace=found["namespace"],
                      name=details.get("name") or request.name)
    reason = f": {found['reason']}" if found["reason"] else ""
    return f"cannot {refused} (forbidden for {found['user']}{reason})"


def _escalation(request: Request, details: dict[str, Any], found: re.Match[str]) -> str:
    rules = [line.strip() for line in found["rules"].splitlines() if line.strip().startswith("{")]
    what = f'{details.get("kind") or request.resource} "{details.get("name") or request.name}"'
    example = f", e.g. {rules[0]}" if rules else ""
    # Without the escalate/bind verbs, a writer may only grant what it holds itself.
    count = f"{len(rules)} " if rules else ""
    return (f"cannot {request} (forbidden for {found['user']}, who does not hold the {count}"
            f"permissions {what} grants{example})")
