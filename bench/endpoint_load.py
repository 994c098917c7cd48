"""Load benchmark of the SCIM endpoint: typical identity-provider traffic on the real API server.

Runs, in one process and on 127.0.0.1 only:
- the endpoint (a real ``litellm-scim endpoint`` process) on a fresh namespace,
- the same traffic against python-scim's in-memory reference server ``scim2-server``,
- the raw API-server writes the endpoint's writes are made of (create a ScimUser, rewrite a member
  shard), with the same client library: the floor of this design,
then stores 10,000 users and 1,000 groups and reports the endpoint's resident memory.

Traffic (Okta/Entra shaped): POST /Users (with password and ``groups: []``), lookups
``GET /Users?filter=userName eq "..."&startIndex=1&count=100`` and group membership PATCHes
``{"op": "Add", "path": "members", "value": [{"value": id}]}``.

    python -m bench.endpoint_load [--writes N] [--reads N] [--concurrency C] [--rss-users N]

Uses $SCIM_TEST_KUBECONFIG / $KUBECONFIG when it answers, else starts the local API server kit.
Writes bench/results/endpoint_load.json."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from litellm_scim import kube, peers
from scim_contract import (
    API_GROUP,
    API_VERSION,
    CLAIM,
    GROUP,
    LABEL_GROUP,
    SHARD,
    USER,
    VERSION,
    claim_name,
    shard_name,
    shard_of,
)
from scim_endpoint.kubeapi import skip_environment_lookups

RESULTS = Path(__file__).resolve().parent / "results" / "endpoint_load.json"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Stats:
    name: str
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rps: float


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def load(name: str, n: int, concurrency: int, one: Callable[[int], Awaitable[bool]]) -> Stats:
    """Run ``one(i)`` for i in range(n) with ``concurrency`` workers; latency of each call."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            ok = await one(i)
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Stats(name, n, errors, _pct(latencies, 0.5), _pct(latencies, 0.9), _pct(latencies, 0.99), n / wall)


# ---- SCIM traffic (same for the endpoint and scim2-server) ---------------------------------------
async def scim_traffic(label: str, base: str, token: str, args: argparse.Namespace) -> dict[str, Stats]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    names: list[str] = []
    ids: list[str] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(base_url=base, headers=headers, connector=connector) as http:

        async def post_user(i: int) -> bool:
            name = f"{label}-{i}-{uuid.uuid4().hex[:6]}@example.com"
            body = {"schemas": [USER_URN], "userName": name, "active": True, "password": "Pa55-word!",
                    "groups": [], "name": {"givenName": "Load", "familyName": str(i)},
                    "emails": [{"primary": True, "value": name, "type": "work"}]}
            async with http.post("Users", json=body) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 201:
                    names.append(name)
                    ids.append(data["id"])
                return resp.status == 201

        async def lookup(i: int) -> bool:
            name = random.choice(names)
            params = {"filter": f'userName eq "{name.upper()}"', "startIndex": "1", "count": "100"}
            async with http.get("Users", params=params) as resp:
                data = await resp.json(content_type=None)
                return resp.status == 200 and data.get("totalResults") == 1

        out = {"POST /Users": await load(f"{label} POST /Users", args.writes, args.concurrency, post_user)}
        out["GET /Users?filter"] = await load(f"{label} GET /Users?filter", args.reads, args.concurrency, lookup)
        groups = []
        for g in range(args.concurrency):
            async with http.post("Groups", json={"schemas": [GROUP_URN], "displayName": f"{label}-g{g}",
                                                 "members": []}) as resp:
                groups.append((await resp.json(content_type=None))["id"])
        # One group per worker, as a provider serialises the changes of one group.
        lanes = {}

        async def add_member(i: int) -> bool:
            task = asyncio.current_task()
            gid = lanes.setdefault(id(task), groups[len(lanes) % len(groups)])
            body = {"schemas": [PATCH_URN], "Operations": [{"op": "Add", "path": "members",
                                                             "value": [{"value": ids[i % len(ids)]}]}]}
            async with http.patch(f"Groups/{gid}", json=body) as resp:
                await resp.read()
                return resp.status in (200, 204)

        out["PATCH /Groups members"] = await load(f"{label} PATCH /Groups", args.writes, args.concurrency,
                                                  add_member)
    return out


# ---- the raw API-server floor ----------------------------------------------------------------------
async def raw_traffic(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> dict[str, Stats]:
    custom = client.CustomObjectsApi(api)

    async def create_user(i: int) -> bool:
        body = {"apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": str(uuid.uuid4())},
                "spec": {"userName": f"raw-{i}@example.com", "active": True}}
        await custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, USER.plural, body)
        return True

    async def claim_then_create(i: int) -> bool:
        uid = str(uuid.uuid4())
        await custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, CLAIM.plural, {
            "apiVersion": API_VERSION, "kind": CLAIM.kind, "metadata": {"name": claim_name("User", f"pair-{i}")},
            "spec": {"resourceKind": "User", "value": f"pair-{i}", "owner": uid}})
        await custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, USER.plural, {
            "apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": uid},
            "spec": {"userName": f"pair-{i}@example.com", "active": True}})
        return True

    out = {"POST /Users": await load("raw create ScimUser", args.writes, args.concurrency, create_user)}
    # What a unique create needs under this design: the name claim, then the resource.
    out["POST /Users (claim + create)"] = await load("raw claim + create", args.writes, args.concurrency,
                                                     claim_then_create)
    shards: list[dict[str, Any]] = []
    for lane in range(args.concurrency):
        gid = f"raw-group-{lane}"
        number = shard_of("seed")
        shards.append(await custom.create_namespaced_custom_object(
            API_GROUP, VERSION, namespace, SHARD.plural, {
                "apiVersion": API_VERSION, "kind": SHARD.kind,
                "metadata": {"name": shard_name(gid, number), "labels": {LABEL_GROUP: gid}},
                "spec": {"group": gid, "shard": number, "users": ["seed"], "groups": []}}))
    lanes: dict[int, int] = {}

    async def rewrite_shard(i: int) -> bool:
        task = asyncio.current_task()
        lane = lanes.setdefault(id(task), len(lanes) % len(shards))
        shard = shards[lane]
        shard["spec"]["users"].append(f"user-{i}")
        shards[lane] = await custom.replace_namespaced_custom_object(
            API_GROUP, VERSION, namespace, SHARD.plural, shard["metadata"]["name"], shard)
        return True

    out["PATCH /Groups members"] = await load("raw replace ScimMemberShard", args.writes, args.concurrency,
                                              rewrite_shard)
    return out


# ---- memory with many resources --------------------------------------------------------------------
async def fill(api: client.ApiClient, namespace: str, users: int, groups: int) -> float:
    """Store ``users`` ScimUsers and ``groups`` ScimGroups (each with two member shards) directly."""
    custom = client.CustomObjectsApi(api)
    user_ids = [str(uuid.uuid4()) for _ in range(users)]
    sem = asyncio.Semaphore(32)

    async def create(plural: str, body: dict[str, Any]) -> None:
        async with sem:
            await custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, plural, body)

    started = time.perf_counter()
    await asyncio.gather(*(create(USER.plural, {
        "apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": uid},
        "spec": {"userName": f"{uid}@example.com", "active": True, "displayName": f"User {uid[:8]}",
                 "emails": [{"value": f"{uid}@example.com", "type": "work", "primary": True}]}})
        for uid in user_ids))
    group_bodies, shard_bodies = [], []
    for g in range(groups):
        gid = str(uuid.uuid4())
        group_bodies.append({"apiVersion": API_VERSION, "kind": GROUP.kind, "metadata": {"name": gid},
                             "spec": {"displayName": f"Group {g}"}})
        members = random.sample(user_ids, 10)
        for number in {shard_of(m) for m in members[:2]}:
            shard_bodies.append({
                "apiVersion": API_VERSION, "kind": SHARD.kind,
                "metadata": {"name": shard_name(gid, number), "labels": {LABEL_GROUP: gid}},
                "spec": {"group": gid, "shard": number, "users": [m for m in members if shard_of(m) == number],
                         "groups": []}})
    await asyncio.gather(*(create(GROUP.plural, b) for b in group_bodies))
    await asyncio.gather(*(create(SHARD.plural, b) for b in shard_bodies))
    return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- orchestration ---------------------------------------------------------------------------------
def start_process(cmd: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[
        bytes]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        peers.wait_http(ready_url, timeout=60)
    except TimeoutError:
        proc.terminate()
        raise RuntimeError(f"{cmd[0]} did not start: {log.read_text()[-2000:]}") from None
    return proc


async def main(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = await kube.api_client(cluster.kubeconfig)
        skip_environment_lookups(api)  # as the endpoint does: the raw floor uses the same client setup
        async with api:
            await kube.apply_crds(api)
            namespace = f"bench-{uuid.uuid4().hex[:8]}"
            raw_namespace = f"{namespace}-raw"
            for ns in (namespace, raw_namespace):
                await kube.ensure_namespace(api, ns)
            token = secrets.token_urlsafe(24)
            encoded = base64.b64encode(token.encode()).decode()
            await client.CoreV1Api(api).create_namespaced_secret(namespace, {
                "metadata": {"name": "litellm-scim-tokens"}, "data": {"bench": encoded}})

            port = peers.free_port()
            endpoint = start_process(
                [sys.executable, "-m", "litellm_scim.cli", "endpoint", "--host", "127.0.0.1", "--port", str(port),
                 "--metrics-port", "0", "--namespace", namespace, "--kubeconfig", cluster.kubeconfig,
                 "--log-level", "warning"],
                f"http://127.0.0.1:{port}/readyz", state / "endpoint.log")
            procs.append(endpoint)
            ref_port = peers.free_port()
            reference = start_process(
                [str(Path(sys.executable).parent / "scim2-server"), "--hostname", "127.0.0.1", "--port",
                 str(ref_port), "--bearer-token", token],
                f"http://127.0.0.1:{ref_port}/ServiceProviderConfig", state / "scim2-server.log")
            procs.append(reference)

            print(f"traffic: {args.writes} POST /Users, {args.reads} lookups, {args.writes} member PATCHes, "
                  f"{args.concurrency} concurrent clients", flush=True)
            ours = await scim_traffic("endpoint", f"http://127.0.0.1:{port}/scim/v2/", token, args)
            theirs = await scim_traffic("scim2-server", f"http://127.0.0.1:{ref_port}/", token, args)
            raw = await raw_traffic(api, raw_namespace, args)

            rss_before = rss_mib(endpoint.pid)
            fill_seconds = await fill(api, namespace, args.rss_users, args.rss_groups)
            # A replica (re)starting on a namespace that already holds them: the usual way to meet 10k users.
            endpoint.terminate()
            endpoint.wait(timeout=10)
            port = peers.free_port()
            started = time.perf_counter()
            endpoint = start_process(
                [sys.executable, "-m", "litellm_scim.cli", "endpoint", "--host", "127.0.0.1", "--port", str(port),
                 "--metrics-port", "0", "--namespace", namespace, "--kubeconfig", cluster.kubeconfig,
                 "--log-level", "warning"],
                f"http://127.0.0.1:{port}/readyz", state / "endpoint-restarted.log")
            procs.append(endpoint)
            ready_seconds = time.perf_counter() - started
            big = await wait_for_count(f"http://127.0.0.1:{port}/scim/v2/", token, args.rss_users)
            # One full scan renders every user once, as a first unindexed filter would.
            await timed_get(f"http://127.0.0.1:{port}/scim/v2/", token, {"filter": 'title eq "nobody"'})
            lookups_big = await big_lookups(f"http://127.0.0.1:{port}/scim/v2/", token, namespace, api, args)
            rss_after = rss_mib(endpoint.pid)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2) if b else float("nan")

    result = {
        "traffic": {"writes": args.writes, "reads": args.reads, "concurrency": args.concurrency},
        "endpoint": {k: asdict(v) for k, v in ours.items()},
        "scim2_server": {k: asdict(v) for k, v in theirs.items()},
        "raw_api_server": {k: asdict(v) for k, v in raw.items()},
        "ratios": {
            "POST /Users p50 endpoint/raw create": ratio(ours["POST /Users"].p50_ms, raw["POST /Users"].p50_ms),
            "POST /Users p50 endpoint/raw claim+create": ratio(ours["POST /Users"].p50_ms,
                                                               raw["POST /Users (claim + create)"].p50_ms),
            "PATCH members p50 endpoint/raw shard rewrite": ratio(ours["PATCH /Groups members"].p50_ms,
                                                                   raw["PATCH /Groups members"].p50_ms),
            "lookup req/s endpoint/scim2-server": ratio(ours["GET /Users?filter"].rps,
                                                        theirs["GET /Users?filter"].rps),
            "POST /Users p50 endpoint/scim2-server": ratio(ours["POST /Users"].p50_ms,
                                                           theirs["POST /Users"].p50_ms),
        },
        "memory": {"users": args.rss_users, "groups": args.rss_groups, "seconds_to_store": round(fill_seconds, 1),
                   "seconds_to_ready_after_restart": round(ready_seconds, 1),
                   "listed_users": big, "rss_mib_before": round(rss_before, 1),
                   "rss_mib_after": round(rss_after, 1),
                   "lookup_with_all_stored": asdict(lookups_big)},
    }
    return result


async def wait_for_count(base: str, token: str, at_least: int) -> int:
    deadline = time.monotonic() + 120
    total = 0
    while time.monotonic() < deadline:
        data = await timed_get(base, token, {"count": "0"})
        total = int(data.get("totalResults", 0))
        if total >= at_least:
            break
        await asyncio.sleep(0.5)
    return total


async def timed_get(base: str, token: str, params: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http, \
            http.get("Users", params=params) as resp:
        data: dict[str, Any] = await resp.json(content_type=None)
        return data


async def big_lookups(base: str, token: str, namespace: str, api: client.ApiClient,
                      args: argparse.Namespace) -> Stats:
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        API_GROUP, VERSION, namespace, USER.plural, limit=500)
    names = [u["spec"]["userName"] for u in listed["items"]]
    async with aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:

        async def lookup(i: int) -> bool:
            params = {"filter": f'userName eq "{random.choice(names)}"', "startIndex": "1", "count": "100"}
            async with http.get("Users", params=params) as resp:
                data = await resp.json(content_type=None)
                return resp.status == 200 and data.get("totalResults") == 1

        return await load("endpoint lookups, 10k stored", args.reads, args.concurrency, lookup)


def table(result: dict[str, Any]) -> str:
    rows = [("operation", "server", "p50 ms", "p90 ms", "p99 ms", "req/s", "errors")]
    for op in ("POST /Users", "POST /Users (claim + create)", "GET /Users?filter", "PATCH /Groups members"):
        for key, label in (("endpoint", "endpoint"), ("raw_api_server", "raw API server"),
                           ("scim2_server", "scim2-server")):
            stats = result[key].get(op)
            if stats:
                rows.append((op, label, f"{stats['p50_ms']:.1f}", f"{stats['p90_ms']:.1f}", f"{stats['p99_ms']:.1f}",
                             f"{stats['rps']:.0f}", str(stats["errors"])))
    big = result["memory"]["lookup_with_all_stored"]
    rows.append(("GET /Users?filter (10k users)", "endpoint", f"{big['p50_ms']:.1f}", f"{big['p90_ms']:.1f}",
                 f"{big['p99_ms']:.1f}", f"{big['rps']:.0f}", str(big["errors"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"{k}: {v}" for k, v in result["ratios"].items()]
    mem = result["memory"]
    lines.append(f"endpoint RSS: {mem['rss_mib_before']} MiB empty, {mem['rss_mib_after']} MiB with "
                 f"{mem['users']} users and {mem['groups']} groups stored (restarted on them: ready in "
                 f"{mem['seconds_to_ready_after_restart']} s)")
    return "\n".join(lines)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rss-users", type=int, default=10_000)
    parser.add_argument("--rss-groups", type=int, default=1_000)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
