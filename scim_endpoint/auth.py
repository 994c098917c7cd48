"""Bearer tokens: the values of one Secret, watched so added and revoked tokens apply at once.

Every ``data`` entry of the Secret is one accepted token (its key names the token). A request's
token is compared with each accepted one in constant time; tokens never reach a log line."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from functools import partial

from kubernetes_asyncio import client

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
        self._tokens: list[bytes] = []

    def _changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        tokens = []
        for key, value in ((new or {}).get("data") or {}).items():
            try:
                token = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                log.warning("token %s in Secret %s is not valid base64; ignored", key, self.secret)
                continue
            if token.strip():
                tokens.append(token.strip())
        self._tokens = tokens
        log.info("accepted SCIM tokens: %d (Secret %s)", len(tokens), self.secret)

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
        given = presented.strip().encode()
        ok = False
        for token in self._tokens:
            # No early exit: the time taken does not tell which token (or whether any) matched.
            ok |= hmac.compare_digest(given, token)
        return ok
