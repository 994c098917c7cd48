"""Abuse benchmark of the SCIM endpoint: does one client sending the costliest requests the caps still
accept keep the endpoint answering everybody else?

Runs on 127.0.0.1 only: a real ``litellm-scim endpoint`` process on a fresh namespace of the real API
server, holding ``--users`` users and ``--groups`` groups (stored directly, as in endpoint_load). Then,
for ``--seconds``:
- ``--abusers`` clients loop the worst ACCEPTED requests, in turn: a filter of ``--max-filter-terms``
  substring terms no index can answer (each evaluated against every user), a full page (``count`` =
  max results) projected through ``--max-attributes`` attribute names, a PATCH of
  ``--max-patch-operations`` operations, and a body nested to the depth limit;
- one probe client measures ``GET /healthz`` and a normal ``GET /Users/{id}``, one after the other.
The target is a p99 under 100 ms for both probes.

    python -m bench.abuse [--users N] [--seconds S] [--abusers N]

Uses $SCIM_TEST_KUBECONFIG / $KUBECONFIG when it answers, else starts the local API server kit.
Writes bench/results/abuse.json."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from bench.endpoint_load import (
    GROUP_URN,
    PATCH_URN,
    USER_URN,
    Series,
    aligned,
    fill,
    save,
    start_endpoint,
    wait_for_count,
)
from litellm_scim import chart, peers
from scim_common import kube, tokens
from scim_common.settings import EndpointSettings
from scim_endpoint.kubeapi import skip_environment_lookups

RESULTS = Path(__file__).resolve().parent / "results" / "abuse.json"
DEFAULTS = EndpointSettings()


KINDS = ("filter", "page", "patch", "nested")


def worst_requests(user_id: str, kinds: tuple[str, ...] = KINDS) -> dict[
        str, Callable[[aiohttp.ClientSession], Awaitable[int]]]:
    """The costliest request of each kind that the default caps accept (the reads ``filter`` and
    ``page``, the writes ``patch`` and ``nested``)."""
    terms = " or ".join(f'emails.value co "zz{i:03d}"' for i in range(DEFAULTS.max_filter_terms))
    assert len(terms) <= DEFAULTS.max_filter_length
    attributes = ",".join(["userName", *(f"name.givenName{i}" for i in range(DEFAULTS.max_attributes - 1))])
    ops = [{"op": "replace", "path": "displayName", "value": f"Abuser {i}"}
           for i in range(DEFAULTS.max_patch_operations)]
    nested: Any = "x"
    for _ in range(DEFAULTS.max_json_depth - 2):
        nested = [nested]

    async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> int:
        async with http.request(method, path, **kw) as resp:
            await resp.read()
            return resp.status

    every: dict[str, tuple[str, Callable[[aiohttp.ClientSession], Awaitable[int]]]] = {
        "filter": (f"filter of {DEFAULTS.max_filter_terms} co terms", lambda http: call(
            http, "POST", "Users/.search", json={"filter": terms, "count": 1})),
        "page": (f"page of {DEFAULTS.max_results} with {DEFAULTS.max_attributes} attributes", lambda http: call(
            http, "GET", "Users", params={"attributes": attributes, "count": str(DEFAULTS.max_results)})),
        "patch": (f"PATCH of {DEFAULTS.max_patch_operations} operations", lambda http: call(
            http, "PATCH", f"Users/{user_id}", json={"schemas": [PATCH_URN], "Operations": ops})),
        "nested": (f"body nested {DEFAULTS.max_json_depth - 1} deep", lambda http: call(
            http, "POST", "Groups", json={"schemas": [GROUP_URN], "displayName": f"n-{uuid.uuid4().hex}",
                                          "urn:x:deep": nested})),
    }
    return dict(every[k] for k in kinds)


async def abuse(base: str, token: str, user_id: str, seconds: float, kinds: tuple[str, ...]) -> list[Series]:
    requests = worst_requests(user_id, kinds)
    series = {name: Series(name, []) for name in requests}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    started = time.perf_counter()
    async with aiohttp.ClientSession(base_url=f"{base}/scim/v2/", headers=headers) as http:
        while time.perf_counter() - started < seconds:
            for name, send in requests.items():
                sent = time.perf_counter()
                status = await send(http)
                series[name].latencies.append(time.perf_counter() - sent)
                # Every one of them is accepted: anything but a success is an error of the benchmark.
                series[name].errors += 0 if status < 300 else 1
    for s in series.values():
        s.wall = time.perf_counter() - started
    return list(series.values())


def abuser_process(base: str, token: str, user_id: str, seconds: float, kinds: tuple[str, ...], out: Any) -> None:
    """One abusing client in its own process, so that reading its large responses does not delay the
    probe's measurements (which would then be the client's latency, not the endpoint's)."""
    out.put([asdict(s) for s in asyncio.run(abuse(base, token, user_id, seconds, kinds))])


async def probe(http: aiohttp.ClientSession, base: str, user_id: str, until: float, health: Series,
                user: Series) -> None:
    while time.monotonic() < until:
        for series, url in ((health, f"{base}/healthz"), (user, f"{base}/scim/v2/Users/{user_id}")):
            started = time.perf_counter()
            async with http.get(url) as resp:
                await resp.read()
                ok = resp.status == 200
            series.latencies.append(time.perf_counter() - started)
            series.errors += 0 if ok else 1
        await asyncio.sleep(0.005)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    kinds = tuple(k.strip() for k in args.requests.split(",") if k.strip())
    state = Path(tempfile.mkdtemp(prefix="scim-abuse-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    endpoint = None
    try:
        api = await kube.api_client(cluster.kubeconfig)
        skip_environment_lookups(api)
        async with api:
            await chart.apply_crds(api)
            namespace = f"abuse-{uuid.uuid4().hex[:8]}"
            await chart.ensure_namespace(api, namespace)
            _, token = await tokens.create_token(api, namespace, name="bench")
            await fill(api, namespace, args.users, args.groups)
            port = peers.free_port()
            endpoint = start_endpoint(port, namespace, cluster.kubeconfig, state / "endpoint.log")
            base = f"http://127.0.0.1:{port}"
            await wait_for_count(f"{base}/scim/v2/", token, args.users)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
            async with aiohttp.ClientSession(base_url=f"{base}/scim/v2/", headers=headers) as http:
                async with http.post("Users", json={"schemas": [USER_URN], "userName": "probe@example.com",
                                                    "displayName": "Probe"}) as resp:
                    user_id = (await resp.json(content_type=None))["id"]
                async with http.post("Users", json={"schemas": [USER_URN], "userName": "abuser@example.com"}) as resp:
                    abused_id = (await resp.json(content_type=None))["id"]
            health, user = Series("GET /healthz", []), Series("GET /Users/{id}", [])
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as probe_http:
                # Quiet baseline first, then the same probes under abuse.
                quiet_health, quiet_user = Series("GET /healthz (quiet)", []), Series("GET /Users/{id} (quiet)", [])
                started = time.perf_counter()
                await probe(probe_http, base, user_id, time.monotonic() + 3, quiet_health, quiet_user)
                quiet_health.wall = quiet_user.wall = time.perf_counter() - started
                results: Any = multiprocessing.Queue()
                abusers = [multiprocessing.Process(target=abuser_process,
                                                   args=(base, token, abused_id, args.seconds, kinds, results))
                           for _ in range(args.abusers)]
                for p in abusers:
                    p.start()
                started = time.perf_counter()
                await probe(probe_http, base, user_id, time.monotonic() + args.seconds, health, user)
                health.wall = user.wall = time.perf_counter() - started
                abused: dict[str, Series] = {}
                for _ in abusers:
                    for s in await asyncio.to_thread(results.get, True, args.seconds + 120):
                        merged = abused.setdefault(s["name"], Series(s["name"], [], wall=s["wall"]))
                        merged.latencies += s["latencies"]
                        merged.errors += s["errors"]
                for p in abusers:
                    p.join(timeout=30)
    finally:
        if endpoint is not None:
            endpoint.terminate()
            endpoint.wait(timeout=10)
        cluster.stop()
    return {
        "machine": {"cpus": os.cpu_count()},
        "setup": {"users": args.users, "groups": args.groups, "seconds": args.seconds, "abusers": args.abusers,
                  "requests": list(kinds),
                  "limits": {k: getattr(DEFAULTS, k) for k in (
                      "max_filter_length", "max_filter_terms", "max_attributes", "max_patch_operations",
                      "max_json_depth", "max_results")}},
        "probes": [asdict(s.stats()) for s in (quiet_health, quiet_user, health, user)],
        "abuse": [asdict(s.stats()) for s in abused.values()],
        "target_p99_ms": 100,
    }


def table(result: dict[str, Any]) -> str:
    rows = [("request", "n", "p50 ms", "p90 ms", "p99 ms", "req/s", "errors")]
    for section in ("probes", "abuse"):
        for s in result[section]:
            rows.append((s["name"], str(s["requests"]), f"{s['p50_ms']:.1f}", f"{s['p90_ms']:.1f}",
                         f"{s['p99_ms']:.1f}", f"{s['rps']:.1f}", str(s["errors"])))
    lines = aligned(rows)
    setup = result["setup"]
    lines.append(f"\n{setup['users']} users, {setup['groups']} groups stored; {setup['abusers']} abusing "
                 f"client(s) for {setup['seconds']} s; {result['machine']['cpus']} CPUs; target p99 < "
                 f"{result['target_p99_ms']} ms for the probes under abuse")
    return "\n".join(lines)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--abusers", type=int, default=1)
    parser.add_argument("--requests", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    save(result, args.out, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
