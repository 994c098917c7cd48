"""Raw HTTP/1.1 over a socket: requests no HTTP client library would send (undecodable bytes, broken
header lines), to see what a real endpoint process answers and logs."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def raw_request(url: str, request: bytes, within: float = 10.0) -> tuple[int, bytes]:
    """Send ``request`` as it is to the server of ``url``; the status code and the whole response."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), within)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), within)  # until the server closes
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), response[:200]
    return int(status_line.split()[1]), response


def get(path: str, *header_lines: bytes) -> bytes:
    """A GET request with exactly these header lines (bytes, no line ends) after Host."""
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *header_lines, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
