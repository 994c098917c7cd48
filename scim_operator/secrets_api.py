"""The operator's one client of Kubernetes Secrets: the key Secrets it delivers into key namespaces,
and the master key Secret it reads at start-up. A refusal becomes a ``KeyDeliveryError`` naming the
verb, resource and place only (the API server's error body may quote the request, key included)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scim_common import kube
from scim_operator import key_secrets as ks

FORBIDDEN = "Forbidden"
DELIVERY_FAILED = "KeyDeliveryFailed"


class KeyDeliveryError(Exception):
    """A key could not be delivered (Secret not writable, alias held by someone else). ``reason`` is
    the condition reason: ``Forbidden`` when RBAC refused the Secret request."""

    def __init__(self, message: str, reason: str = DELIVERY_FAILED) -> None:
        super().__init__(message)
        self.reason = reason


def _refused(exc: ApiException, verb: str, namespace: str, name: str | None = None) -> KeyDeliveryError:
    request = kube.Request(verb, "secrets", namespace, name)
    message = kube.refusal(exc, request) or f"cannot {request}: HTTP {exc.status} {exc.reason or ''}".rstrip()
    return KeyDeliveryError(message, FORBIDDEN if exc.status == 403 else DELIVERY_FAILED)


class Secrets:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._core = client.CoreV1Api(api)
        # The operator's own namespace: the source of the key Secrets it lists.
        self.namespace = namespace

    async def value(self, name: str, key: str) -> str | None:
        """One value of a Secret in the operator's namespace (the master key); None without that key.
        Raises ``ApiException`` for the caller to name the Secret it could not read."""
        secret = await self._core.read_namespaced_secret(name, self.namespace)
        value = (secret.data or {}).get(key)
        return base64.b64decode(value).decode().strip() if value else None

    async def delivered(self, namespaces: Iterable[str], group: str, user: str | None = None) -> list[ks.Delivered]:
        """The group's key Secrets (only ``user``'s when given: one user's change lists a few Secrets,
        not the whole group's). A namespace that does not exist has none."""
        found: list[ks.Delivered] = []
        selector = ks.group_selector(self.namespace, group)
        if user is not None:
            selector += f",{ks.LABEL_USER}={ks.label_value(user)}"
        for ns in sorted(set(namespaces)):
            try:
                listing = await self._core.list_namespaced_secret(ns, label_selector=selector)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise _refused(exc, "list", ns) from None
            for item in listing.items:
                delivered = ks.read(item.to_dict())
                if (delivered is not None and delivered.ref.group == group
                        and delivered.ref.source_namespace == self.namespace):
                    found.append(delivered)
        return found

    async def write(self, secret: dict[str, Any]) -> None:
        """Create the key Secret, or replace one this operator delivered for the same key; never
        someone else's Secret of that name."""
        body: Any = secret  # the client sends a dict as it is
        ns, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        try:
            await self._core.create_namespaced_secret(ns, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise _refused(exc, "create", ns) from None
        try:
            found = await self._core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            raise _refused(exc, "get", ns, name) from None
        current, mine = ks.read(found.to_dict()), ks.read(secret)
        if current is None or mine is None or current.ref != mine.ref:
            # Someone else's Secret with our name: never overwrite it.
            raise KeyDeliveryError(f"Secret {ns}/{name} exists and is not managed by this operator")
        # Conditional on the version read: a concurrent writer makes this fail (409) instead of losing a key.
        body = {**secret, "metadata": {**secret["metadata"], "resourceVersion": found.metadata.resource_version}}
        try:
            await self._core.replace_namespaced_secret(name, ns, body)
        except ApiException as exc:
            raise _refused(exc, "update", ns, name) from None

    async def remove(self, ns: str, name: str) -> None:
        try:
            await self._core.delete_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise _refused(exc, "delete", ns, name) from None

    async def set_retiring(self, d: ks.Delivered, items: list[ks.Retiring]) -> None:
        """Record the keys still to delete (and when) in the Secret, next to the key replacing them."""
        patch = {"metadata": {"annotations": {ks.ANN_RETIRING: ks.retiring_value(items)}}}
        try:
            await self._core.patch_namespaced_secret(d.name, d.ref.namespace, patch)
        except ApiException as exc:
            if exc.status != 404:
                raise _refused(exc, "patch", d.ref.namespace, d.name) from None
