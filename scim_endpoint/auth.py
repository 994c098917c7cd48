"""Bearer tokens: the values of one Secret, watched so added and revoked tokens apply at once.

The Secret's format is defined once, in ``litellm_scim.tokens`` (the ``token`` command writes it);
tokens are compared in constant time and never reach a log line. When the Secret is the Helm chart's
(rendered without any token, asking for a first one by annotation), the endpoint issues that token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from kubernetes_asyncio import client

from scim_common.tokens import TokenError, initial_token_wanted, issue_initial_token, match_token, parse_token_secret
from scim_endpoint.informer import Informer, Obj

log = logging.getLogger(__name__)

# Retrying a failed issue (API server away, or a Role without the update rule): doubling up to this.
ISSUE_RETRY_MAX = 60.0


class Tokens:
    def __init__(self, api: client.ApiClient, namespace: str, secret: str) -> None:
        core = client.CoreV1Api(api)
        self._api = api
        self._namespace = namespace
        self.secret = secret
        self.informer = Informer(
            "secret", partial(core.list_namespaced_secret, namespace), field_selector=f"metadata.name={secret}"
        )
        self.informer.listeners.append(self._changed)
        self._tokens: dict[str, str] = {}
        self._issuing: asyncio.Task[None] | None = None

    def _changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        self._tokens = parse_token_secret(new)
        log.info("accepted SCIM tokens: %d (Secret %s)", len(self._tokens), self.secret)
        if initial_token_wanted(new) and (self._issuing is None or self._issuing.done()):
            self._issuing = asyncio.create_task(self._issue_initial_token(), name="issue-initial-token")

    async def _issue_initial_token(self) -> None:
        """Issue the token the chart's Secret asks for. Every replica tries; the write is conditional,
        so one succeeds and the watch brings the token to all of them."""
        delay = 1.0
        while True:
            try:
                issued = await issue_initial_token(self._api, self._namespace, self.secret)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # TokenError carries the API server's explanation (never a token); for anything else
                # the type is enough and keeps request details out of the log.
                reason = str(exc) if isinstance(exc, TokenError) else type(exc).__name__
                log.warning("cannot issue the initial SCIM token (Secret %s): %s; retrying in %.0fs",
                            self.secret, reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, ISSUE_RETRY_MAX)
                if not initial_token_wanted(self.informer.objects.get(self.secret)):
                    return  # somebody else put a token there meanwhile
                continue
            if issued:
                log.info("issued the initial SCIM token %r (Secret %s)", issued, self.secret)
            return

    @property
    def ready(self) -> bool:
        return self.informer.synced.is_set()

    def start(self) -> None:
        self.informer.start()

    async def stop(self) -> None:
        if self._issuing is not None:
            self._issuing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._issuing
            self._issuing = None
        await self.informer.stop()

    def accepts(self, authorization: str | None) -> bool:
        return self.token_name(authorization) is not None

    def token_name(self, authorization: str | None) -> str | None:
        """The name of the accepted token ``Authorization: Bearer <token>`` carries (None: none), for
        the audit trail; the token is compared exactly: only
        the ASCII spaces and tabs HTTP allows around it are ignored (``str.strip()`` would also drop
        Unicode whitespace, so a variant of a token would pass). Header bytes that are not UTF-8 reach
        us as lone surrogates: they can be no token, so the answer is no (a 401, not a 500)."""
        if not authorization:
            return None
        blanks = " \t"  # RFC 9110 OWS: what HTTP itself treats as space around a value
        scheme, _, presented = authorization.strip(blanks).partition(" ")
        presented = presented.strip(blanks)
        if scheme.lower() != "bearer" or not presented:
            return None
        try:
            presented.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return match_token(presented, self._tokens)
