"""A pod's network, without a kubelet: a network namespace of its own, its container ports published
on the host (``kubectl port-forward``), and the cluster's services reachable inside it at the
addresses the pod is configured with (the API server and LiteLLM, which listen on the host's
127.0.0.1 here, as Services would in a cluster).

Run as a process per pod (``python podnet.py NETNS --publish H:P ... --reach PORT ...``): it creates
the namespace, forwards until SIGTERM, then deletes the namespace. Sockets are opened inside the
pod's namespace with setns(2), so nothing else (no veth, no routes, no iptables) is needed. Linux and
root only, like running the containers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def inside(name: str, make: Callable[[], T]) -> T:
    """Run ``make`` (which opens a socket) with this thread in the pod's network namespace."""
    here = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(netns_path(name), os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        return make()
    finally:
        _libc.setns(here, CLONE_NEWNET)
        os.close(here)
        os.close(there)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _connector(netns: str | None) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        return s

    return (lambda: inside(netns, connect)) if netns else connect


async def _serve(listener: socket.socket, make_target: Callable[[], socket.socket], port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = make_target()
        try:
            await loop.sock_connect(target, ("127.0.0.1", port))
        except OSError:
            target.close()
            writer.close()
            return
        t_reader, t_writer = await asyncio.open_connection(sock=target)
        await asyncio.gather(_pipe(reader, t_writer), _pipe(t_reader, writer))

    return await asyncio.start_server(handle, sock=listener)


async def forward(netns: str, publish: list[tuple[int, int]], reach: list[int]) -> None:
    servers = []
    for host_port, pod_port in publish:
        listener = socket.create_server(("127.0.0.1", host_port))
        servers.append(await _serve(listener, _connector(netns), pod_port))
    for port in reach:
        listener = inside(netns, lambda p=port: socket.create_server(("127.0.0.1", p)))  # type: ignore[misc]
        servers.append(await _serve(listener, _connector(None), port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("netns")
    parser.add_argument("--publish", action="append", default=[], help="HOSTPORT:PODPORT")
    parser.add_argument("--reach", action="append", default=[], type=int, help="host port reachable in the pod")
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "add", args.netns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", args.netns, "ip", "link", "set", "lo", "up"], check=True)
        publish = [(int(h), int(p)) for h, p in (item.split(":") for item in args.publish)]
        asyncio.run(forward(args.netns, publish, args.reach))
    finally:
        subprocess.run(["ip", "netns", "del", args.netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
