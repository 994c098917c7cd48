"""Bearer tokens: the values of one Secret, watched so added and revoked tokens apply at once.

The Secret's format is defined once, in ``litellm_scim.tokens`` (the ``token`` command writes it);
tokens are compared in constant time and never reach a log line."""

from __future__ import annotations

import logging
from functools import partial

from kubernetes_asyncio import client

from litellm_scim.tokens import match_token, parse_token_secret
from scim_endpoint.informer import Informer, Obj

log = logging.getLogger(__name__)


class Tokens:
    def __init__(self, api: client.ApiClient, namespace: str, secret: str) -> None:
        core = client.CoreV1Api(api)
        self.secret = secret
        self.informer = Informer(
            "secret", partial(core.list_namespaced_secret, namespace), field_selector=f"metadata.name={secret}"
        )
        self.informer.listeners.append(self._changed)
        self._tokens: dict[str, str] = {}

    def _changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        self._tokens = parse_token_secret(new)
        log.info("accepted SCIM tokens: %d (Secret %s)", len(self._tokens), self.secret)

    @property
    def ready(self) -> bool:
        return self.informer.synced.is_set()

    def start(self) -> None:
        self.informer.start()

    async def stop(self) -> None:
        await self.informer.stop()

    def accepts(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        return match_token(presented.strip(), self._tokens) is not None
