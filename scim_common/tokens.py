"""The SCIM bearer tokens: their Secret format, and reading and writing it (``litellm-scim token`` and
the endpoint use both).

One Secret (default ``litellm-scim-tokens``) holds every token the endpoint accepts: each ``data``
entry is one token (key = token name, value = the token) and the annotation
``tokens.scim.litellm-operator.dev/<name>`` records when it was created (RFC 3339). Several tokens at
once make rotation possible without downtime. The endpoint parses the Secret with
:func:`parse_token_secret` and checks a presented token with :func:`match_token`, so both sides agree
on exactly which tokens are valid.

The Helm chart renders the Secret without any token: whatever a chart renders is stored in the
release's history, and ``helm rollback`` would write a token revoked since then back into the Secret.
It asks for a first token with the annotation :data:`INITIAL_TOKEN_ANNOTATION` instead, and the
endpoint issues it with :func:`issue_initial_token`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import random
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from scim_common import clock, kube
from scim_common.settings import EndpointSettings

# The endpoint reads the same Secret name by default: one place for it, the settings.
DEFAULT_SECRET = str(EndpointSettings.model_fields["token_secret"].default)
CREATED_ANNOTATION_PREFIX = "tokens.scim.litellm-operator.dev/"
PART_OF_LABEL = ("app.kubernetes.io/part-of", "litellm-scim-operator")
# A recognisable prefix lets secret scanners and people spot a leaked token; 32 random bytes = 256 bits.
TOKEN_PREFIX = "scim_"  # noqa: S105 - a public prefix, not a credential
TOKEN_BYTES = 32
# A token name is both a Secret data key and the name part of an annotation key: the stricter of the two.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9]([-._A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
# The chart's request for a first token; the value is its name. Deliberately outside the
# CREATED_ANNOTATION_PREFIX namespace, where any annotation names a token.
INITIAL_TOKEN_ANNOTATION = "scim.litellm-operator.dev/initial-token"  # noqa: S105 - an annotation key
# When the Secret first held a token (issued by the endpoint, or made with `token create` while the
# request above was there). Set once and never removed, so revoking every token later leaves the
# Secret empty instead of making the endpoint issue a new one. Helm never renders it, so upgrades and
# rollbacks keep it (their three-way merge leaves fields alone that no release manifest mentions).
INITIAL_TOKEN_ISSUED_ANNOTATION = "scim.litellm-operator.dev/initial-token-issued"  # noqa: S105 - an annotation key
REQUEST_TIMEOUT = 15.0
MAX_ATTEMPTS = 20


class TokenError(Exception):
    """A failure with a one-line message meant for the person at the terminal (never holds a token);
    ``status`` is the API server's HTTP status when it refused the call."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str | None  # RFC 3339, None when the annotation is missing (a hand-written entry)


# --- the Secret format (shared with the endpoint) ---------------------------------------------------


def _field(secret: Any, name: str) -> Any:
    if secret is None:
        return None
    if isinstance(secret, Mapping):
        return secret.get(name)
    return getattr(secret, name, None)


def parse_token_secret(secret: Any) -> dict[str, str]:
    """``{name: token}`` for every usable entry of the token Secret.

    Accepts the Secret as the API returns it: a raw JSON mapping (e.g. from a watch event) or a
    kubernetes_asyncio ``V1Secret``. Values are base64 as stored; surrounding whitespace is dropped
    (``kubectl create secret --from-file`` keeps a trailing newline), and empty or undecodable
    entries are ignored, so an empty value can never authenticate anybody."""
    data = _field(secret, "data") or {}
    tokens: dict[str, str] = {}
    for name, encoded in data.items():
        if not isinstance(encoded, str):
            continue
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            continue
        if value:
            tokens[str(name)] = value
    return tokens


def token_infos(secret: Any) -> list[TokenInfo]:
    """Names and creation times of the tokens in the Secret, oldest first; never the values."""
    metadata = _field(secret, "metadata")
    annotations = _field(metadata, "annotations") or {}
    infos = [TokenInfo(name, annotations.get(CREATED_ANNOTATION_PREFIX + name))
             for name in parse_token_secret(secret)]
    return sorted(infos, key=lambda t: (t.created or "", t.name))


def initial_token_wanted(secret: Any) -> str | None:
    """The name of the initial token the Secret asks for, if it is to be issued now: the chart's
    annotation names it, the Secret has never held a token, and it holds no usable one."""
    annotations = _field(_field(secret, "metadata"), "annotations") or {}
    name = annotations.get(INITIAL_TOKEN_ANNOTATION)
    if not name or INITIAL_TOKEN_ISSUED_ANNOTATION in annotations or parse_token_secret(secret):
        return None
    return str(name)


def match_token(presented: str, tokens: Mapping[str, str]) -> str | None:
    """The name of the token equal to ``presented``, else None.

    Compares against every token in constant time per token and without stopping at a match, so the
    response time says nothing about which or how many characters were right."""
    found: str | None = None
    given = presented.encode("utf-8")
    for name, token in tokens.items():
        if hmac.compare_digest(given, token.encode("utf-8")) and found is None:
            found = name
    return found if presented else None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise TokenError(
            f"invalid token name {name!r}: use 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )


def _free_default_name(taken: Mapping[str, Any], prefix: str) -> str:
    base = f"{prefix}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


# --- reading and writing the Secret --------------------------------------------------------------


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _api_error(exc: ApiException, verb: str, namespace: str, secret_name: str) -> TokenError:
    """One line for a failed call on the token Secret; for a 401 or 403 it names exactly the verb,
    Secret, namespace and (when the API server says) the user, i.e. what a Role would have to grant."""
    request = kube.Request(verb, "secrets", namespace, secret_name)
    return TokenError(kube.refusal(exc, request) or f"cannot {request}: {kube.status_message(exc)}", exc.status)


async def _read(core: client.CoreV1Api, namespace: str, secret_name: str) -> client.V1Secret | None:
    try:
        return await core.read_namespaced_secret(secret_name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error(exc, "get", namespace, secret_name) from None


async def _backoff(attempt: int) -> None:
    # Jitter keeps a crowd of concurrent writers from colliding again on the next attempt.
    await asyncio.sleep(random.uniform(0, 0.05 * min(attempt, 10)))  # noqa: S311


async def create_token(api: client.ApiClient, namespace: str, secret_name: str = DEFAULT_SECRET,
                       name: str | None = None, *, name_prefix: str = "token") -> tuple[str, str]:
    """Add a new random token to the Secret (creating the Secret if needed); returns (name, token).

    Writes use the Secret's resourceVersion, so concurrent creates and revokes never lose each other's
    entries: a conflict re-reads and tries again."""
    if name is not None:
        check_name(name)
    core = client.CoreV1Api(api)
    token = new_token()
    for attempt in range(MAX_ATTEMPTS):
        secret = await _read(core, namespace, secret_name)
        created = clock.rfc3339()
        if secret is None:
            chosen = name or _free_default_name({}, name_prefix)
            body = {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": secret_name, "namespace": namespace,
                             "labels": dict([PART_OF_LABEL]),
                             "annotations": {CREATED_ANNOTATION_PREFIX + chosen: created}},
                "data": {chosen: _b64(token)},
            }
            try:
                await core.create_namespaced_secret(namespace, body, _request_timeout=REQUEST_TIMEOUT)  # type: ignore[arg-type]
                return chosen, token
            except ApiException as exc:
                if exc.status == 409:  # somebody else created it just now: add to theirs
                    await _backoff(attempt)
                    continue
                if exc.status == 404:
                    raise TokenError(f"namespace {namespace!r} does not exist") from None
                raise _api_error(exc, "create", namespace, secret_name) from None
        data = dict(secret.data or {})
        if name is not None and name in data:
            raise TokenError(f"a token named {name!r} already exists in Secret {namespace}/{secret_name}; "
                             "choose another name or revoke it first")
        chosen = name or _free_default_name(data, name_prefix)
        data[chosen] = _b64(token)
        body = api.sanitize_for_serialization(secret)
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("labels", {})[PART_OF_LABEL[0]] = PART_OF_LABEL[1]
        annotations = metadata.setdefault("annotations", {})
        annotations[CREATED_ANNOTATION_PREFIX + chosen] = created
        if INITIAL_TOKEN_ANNOTATION in annotations:
            # A token made before the endpoint issued the initial one takes its place for good.
            annotations.setdefault(INITIAL_TOKEN_ISSUED_ANNOTATION, created)
        body["data"] = data
        try:
            await core.replace_namespaced_secret(secret_name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
            return chosen, token
        except ApiException as exc:
            if exc.status == 409:  # the Secret changed since we read it
                await _backoff(attempt)
                continue
            raise _api_error(exc, "update", namespace, secret_name) from None
    raise TokenError(f"Secret {namespace}/{secret_name} kept changing; gave up after {MAX_ATTEMPTS} attempts")


async def issue_initial_token(api: client.ApiClient, namespace: str,
                              secret_name: str = DEFAULT_SECRET) -> str | None:
    """Write the initial token the Secret asks for (see :func:`initial_token_wanted`); returns its
    name, or None when there was nothing to issue (no request, a token is there, or it was issued
    before). Never returns or logs the value: the Secret is the only place it exists.

    Every endpoint replica may call this at the same moment. The write is an update conditional on
    the resourceVersion just read, so exactly one succeeds; the others get a conflict, read again and
    find the token. Needs get and update on this one Secret, nothing else."""
    core = client.CoreV1Api(api)
    for attempt in range(MAX_ATTEMPTS):
        secret = await _read(core, namespace, secret_name)
        name = initial_token_wanted(secret)
        if secret is None or name is None:
            return None
        check_name(name)
        created = clock.rfc3339()
        body = api.sanitize_for_serialization(secret)  # carries metadata.resourceVersion: conditional
        body["data"] = {**(body.get("data") or {}), name: _b64(new_token())}
        annotations = body["metadata"].setdefault("annotations", {})
        annotations[CREATED_ANNOTATION_PREFIX + name] = created
        annotations[INITIAL_TOKEN_ISSUED_ANNOTATION] = created
        try:
            await core.replace_namespaced_secret(secret_name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
            return name
        except ApiException as exc:
            if exc.status == 409:  # changed since we read it (another replica issued it, or a CLI write)
                await _backoff(attempt)
                continue
            raise _api_error(exc, "update", namespace, secret_name) from None
    raise TokenError(f"Secret {namespace}/{secret_name} kept changing; gave up after {MAX_ATTEMPTS} attempts")


async def list_tokens(api: client.ApiClient, namespace: str,
                      secret_name: str = DEFAULT_SECRET) -> list[TokenInfo]:
    secret = await _read(client.CoreV1Api(api), namespace, secret_name)
    return [] if secret is None else token_infos(secret)


async def read_tokens(api: client.ApiClient, namespace: str, secret_name: str = DEFAULT_SECRET) -> dict[str, str]:
    """``{name: token}`` as the endpoint would accept them (for tools that need a token back)."""
    return parse_token_secret(await _read(client.CoreV1Api(api), namespace, secret_name))


async def revoke_token(api: client.ApiClient, namespace: str, secret_name: str, name: str) -> None:
    """Remove one token; the endpoint stops accepting it as soon as it sees the change."""
    core = client.CoreV1Api(api)
    for attempt in range(MAX_ATTEMPTS):
        secret = await _read(core, namespace, secret_name)
        if secret is None:
            raise TokenError(f"no token named {name!r}: Secret {namespace}/{secret_name} does not exist")
        data = dict(secret.data or {})
        if name not in data:
            known = ", ".join(sorted(data)) or "none"
            raise TokenError(f"no token named {name!r} in Secret {namespace}/{secret_name} (tokens: {known})")
        del data[name]
        body = api.sanitize_for_serialization(secret)
        body["data"] = data
        (body.get("metadata", {}).get("annotations") or {}).pop(CREATED_ANNOTATION_PREFIX + name, None)
        try:
            await core.replace_namespaced_secret(secret_name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
            return
        except ApiException as exc:
            if exc.status == 409:
                await _backoff(attempt)
                continue
            raise _api_error(exc, "update", namespace, secret_name) from None
    raise TokenError(f"Secret {namespace}/{secret_name} kept changing; gave up after {MAX_ATTEMPTS} attempts")
