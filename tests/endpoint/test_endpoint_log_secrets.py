"""A real endpoint process at ``--log-level debug`` never logs a SCIM token: not the token Secret as the
Kubernetes client reads it, not a malformed request's raw header lines as the HTTP server reports it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kubernetes_asyncio import client
from operator_helpers import eventually, start_endpoint, stop_endpoint
from rawhttp import get, raw_request
from scim_http import TOKEN_SECRET

from scim_common import tokens

USERS = "/scim/v2/Users"


def b64(text: str) -> str:
    """How a Secret's value travels in an API response body."""
    return base64.b64encode(text.encode()).decode()


async def test_debug_log_holds_no_token(endpoint_kubeconfig: str, namespace: str, token: str,
                                        tmp_path: Path) -> None:
    log = tmp_path / "endpoint.log"
    ep = start_endpoint(endpoint_kubeconfig, namespace, log, "--log-level", "debug", "--log-format", "json")
    try:
        bearer = b"Authorization: Bearer " + token.encode()
        # The token Secret has been read (listed and watched) once the token is accepted.
        assert (await raw_request(ep.url, get(USERS, bearer)))[0] == 200
        malformed = [
            get(USERS, bearer + b"\x01"),                            # a control character in that very line
            get(USERS, bearer + b"A" * 9000),                        # a header line over aiohttp's limit
            get(USERS, bearer, b"X-Token " + token.encode()),        # the token again, in a line without a colon
            get(USERS + "?t=" + token + "\x01"),                     # in the request line
        ]
        for request in malformed:
            status, response = await raw_request(ep.url, request)
            assert status == 400, response[:200]
    finally:
        stop_endpoint(ep)

    text = log.read_text(errors="replace")
    leaked = {name: form for name, form in (("token", token), ("token in base64", b64(token)),
                                            ("start of the token", token[:16])) if form in text}
    assert not leaked, f"in the log: {sorted(leaked)}"
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(r["level"] == "debug" for r in records), "the process logged at debug"
    errors = [r for r in records if r["logger"] == "aiohttp.server"]
    # Each malformed request is still reported, with the kind of error, but without the request's bytes.
    assert len(errors) == len(malformed), errors
    assert all(r["message"].startswith("Error handling request from 127.0.0.1: ") for r in errors), errors
    assert any("BadHttpMessage 400: Invalid header value char" in r["message"] for r in errors), errors
    assert not any("exception" in r for r in errors), errors


async def test_debug_log_holds_no_initial_token(kube_api: client.ApiClient, endpoint_kubeconfig: str,
                                                namespace: str, tmp_path: Path) -> None:
    """The token the endpoint issues itself travels through the Kubernetes client's read and update of
    the Secret: neither response body reaches the log."""
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_secret(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": TOKEN_SECRET, "annotations": {tokens.INITIAL_TOKEN_ANNOTATION: "default"}}})
    log = tmp_path / "endpoint.log"
    ep = start_endpoint(endpoint_kubeconfig, namespace, log, "--log-level", "debug")

    async def issued() -> str | None:
        secret = await core.read_namespaced_secret(TOKEN_SECRET, namespace)
        return tokens.parse_token_secret(secret).get("default")

    try:
        token = await eventually(issued, within=20, what="the initial token")
        status, _ = await raw_request(ep.url, get(USERS, b"Authorization: Bearer " + token.encode()))
        assert status == 200
    finally:
        stop_endpoint(ep)
    text = log.read_text(errors="replace")
    assert "issued the initial SCIM token 'default'" in text and " DEBUG " in text
    leaked = [name for name, form in (("token", token), ("token in base64", b64(token))) if form in text]
    assert not leaked, f"in the log: {leaked}"
