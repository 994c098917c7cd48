"""Tokens managed with ``litellm-scim token`` take effect on a RUNNING endpoint: a new token is accepted
and a revoked one gets 401, without a restart."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from operator_helpers import start_endpoint, stop_endpoint

from scim_common import tokens

CHANGE_WITHIN = 15.0  # generous for a loaded CI machine; the measured time is printed


@pytest.fixture
def endpoint(tmp_path: Path, namespace: str, endpoint_kubeconfig: str) -> Iterator[str]:
    ep = start_endpoint(endpoint_kubeconfig, namespace, tmp_path / "endpoint.log")
    try:
        yield f"{ep.url}/scim/v2"
    finally:
        stop_endpoint(ep)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


async def token_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "litellm_scim.cli", "token", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def status_of(url: str, token: str) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{url}/Users", headers={"Authorization": f"Bearer {token}"})).status_code


async def wait_for_status(url: str, token: str, wanted: int) -> float:
    """Seconds until ``GET /Users`` with ``token`` answers ``wanted``."""
    started = time.monotonic()
    while (status := await status_of(url, token)) != wanted:
        assert time.monotonic() - started < CHANGE_WITHIN, f"still {status} after {CHANGE_WITHIN}s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_created_token_works_and_revoked_token_gets_401_without_restart(
        endpoint: str, namespace: str, kubeconfig: str) -> None:
    common = ["--namespace", namespace, "--kubeconfig", kubeconfig]
    out = await token_cli("create", "idp", *common, "--base-url", endpoint)
    token = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Secret token:"))
    out2 = await token_cli("create", "other", *common)
    other = next(line.split(":", 1)[1].strip() for line in out2.splitlines() if line.startswith("Secret token:"))

    accepted_after = await wait_for_status(endpoint, token, 200)
    assert await status_of(endpoint, token + "x") == 401
    assert await status_of(endpoint, token[:-1]) == 401

    await token_cli("revoke", "idp", *common)
    revoked_after = await wait_for_status(endpoint, token, 401)
    assert await status_of(endpoint, other) == 200  # the other token keeps working
    print(f"new token accepted after {accepted_after:.2f}s; revoked token refused after {revoked_after:.2f}s")


async def test_endpoint_accepts_exactly_what_parse_token_secret_reads(
        endpoint: str, namespace: str, kubeconfig: str) -> None:
    # A hand-made entry (kubectl create secret --from-file keeps a trailing newline) works like a CLI token.
    from kubernetes_asyncio import client

    from scim_common import kube

    api = await kube.api_client(kubeconfig)
    async with api:
        name, _ = await tokens.create_token(api, namespace, tokens.DEFAULT_SECRET, "cli")
        await client.CoreV1Api(api).patch_namespaced_secret(
            tokens.DEFAULT_SECRET, namespace,
            {"data": {"from-file": _b64("hand-made-token-0123456789\n"), "empty": ""}},
            _content_type="application/merge-patch+json",
        )
        secret = await client.CoreV1Api(api).read_namespaced_secret(tokens.DEFAULT_SECRET, namespace)
    assert set(tokens.parse_token_secret(secret)) == {name, "from-file"}
    await wait_for_status(endpoint, "hand-made-token-0123456789", 200)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{endpoint}/Users")).status_code == 401
        assert (await http.get(f"{endpoint}/Users", headers={"Authorization": "Bearer"})).status_code == 401
