"""The bearer token is compared exactly, on a real endpoint process: only ASCII spaces and tabs around
it are ignored, so a variant of a token (Unicode whitespace added) is refused, and a header whose bytes
are not UTF-8 is a 401 like any other wrong token, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from operator_helpers import EndpointProcess, start_endpoint, stop_endpoint
from rawhttp import get, raw_request

USERS = "/scim/v2/Users"


@pytest.fixture
def endpoint(endpoint_kubeconfig: str, namespace: str, token: str, tmp_path: Path) -> Iterator[EndpointProcess]:
    ep = start_endpoint(endpoint_kubeconfig, namespace, tmp_path / "endpoint.log")
    yield ep
    stop_endpoint(ep)


async def _status(ep: EndpointProcess, authorization: str) -> int:
    """GET /Users over HTTP with this Authorization value (aiohttp sends it UTF-8 encoded)."""
    async with aiohttp.ClientSession() as http, http.get(
            ep.url + USERS, headers={"Authorization": authorization}) as resp:
        return resp.status


# Unicode whitespace that str.strip() removes (and one it does not): each makes a different token.
VARIANTS = [
    "{token}\u00a0",  # no-break space after the token
    "\u00a0{token}",  # ... before it
    "{token}\u2003",  # em space
    "{token}\u3000",  # ideographic space
    "{token}\u0085",  # next line (a C1 control)
    "{token}\u200b",  # zero-width space
]


async def test_unicode_whitespace_is_part_of_the_presented_token(endpoint: EndpointProcess, token: str) -> None:
    assert await _status(endpoint, f"Bearer {token}") == 200
    accepted = [v for v in VARIANTS if await _status(endpoint, "Bearer " + v.format(token=token)) != 401]
    assert accepted == []


async def test_ascii_spaces_and_tabs_around_the_token_are_ignored(endpoint: EndpointProcess, token: str) -> None:
    for authorization in (f"Bearer  {token}", f"Bearer {token}\t", f"bearer \t{token} ", f"BEARER {token}"):
        assert await _status(endpoint, authorization) == 200, repr(authorization)
    for authorization in (f"Bearer {token}x", f"Bearer {token[:-1]}", f"Basic {token}", f"Bearer{token}",
                          "Bearer ", "Bearer \t "):
        assert await _status(endpoint, authorization) == 401, repr(authorization)


# Bytes that are not UTF-8: an invalid byte, a truncated sequence, an encoded surrogate, a Latin-1
# no-break space, a lone continuation byte.
UNDECODABLE = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xa0", b"\x80abc"]


async def test_undecodable_authorization_bytes_are_a_401(endpoint: EndpointProcess, token: str) -> None:
    """They reach the server as undecodable text: refused like a wrong token, with a SCIM error."""
    for raw in UNDECODABLE:
        for value in (token.encode() + raw, raw + token.encode(), raw):
            status, response = await raw_request(endpoint.url, get(USERS, b"Authorization: Bearer " + value))
            assert status == 401, (value, response[:300])
            assert b"urn:ietf:params:scim:api:messages:2.0:Error" in response
    # The process is unharmed: the right token still works.
    status, _ = await raw_request(endpoint.url, get(USERS, b"Authorization: Bearer " + token.encode()))
    assert status == 200
