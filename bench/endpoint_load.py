"""Load benchmark of the SCIM endpoint: typical identity-provider traffic on the real API server.

Runs, in one process and on 127.0.0.1 only:
- the endpoint (a real ``litellm-scim endpoint`` process) on a fresh namespace,
- the same traffic against python-scim's in-memory reference server ``scim2-server``,
- the raw API-server writes the endpoint's writes are made of (create a ScimUser, claim + create,
  rewrite a member shard), with the same client library, in the endpoint's namespace while its
  watches are open: the floor of this design (and again in a namespace nobody watches),
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
import json
import os
import random
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

from litellm_scim import chart, peers
from scim_common import kube, tokens
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


Op = Callable[[int], Awaitable[bool]]


@dataclass
class Series:
    """Latencies of one operation on one server, gathered over several rounds."""

    name: str
    latencies: list[float]
    errors: int = 0
    wall: float = 0.0

    def stats(self) -> Stats:
        n = len(self.latencies)
        return Stats(self.name, n, self.errors, _pct(self.latencies, 0.5), _pct(self.latencies, 0.9),
                     _pct(self.latencies, 0.99), n / self.wall if self.wall else 0.0)


async def run_batch(series: Series, indexes: range, concurrency: int, one: Op) -> None:
    """Run ``one(i)`` for each index with ``concurrency`` workers, adding each call's latency."""
    counter = iter(indexes)

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            ok = await one(i)
            series.latencies.append(time.perf_counter() - started)
            series.errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    series.wall += time.perf_counter() - started


async def interleaved(contenders: dict[str, Op], n: int, concurrency: int, rounds: int) -> dict[str, Stats]:
    """Each contender runs n calls in ``rounds`` slices, taking turns, so that a change in the machine's
    background load (it is shared) hits all of them alike."""
    series = {name: Series(name, []) for name in contenders}
    step = max(1, n // rounds)
    for start in range(0, n, step):
        for name, one in contenders.items():
            await run_batch(series[name], range(start, min(n, start + step)), concurrency, one)
    return {name: s.stats() for name, s in series.items()}


# ---- SCIM traffic (same for the endpoint and scim2-server) ---------------------------------------
class ScimTraffic:
    def __init__(self, label: str, http: aiohttp.ClientSession) -> None:
        self.label = label
        self.http = http
        self.names: list[str] = []
        self.ids: list[str] = []
        self.groups: asyncio.Queue[str] = asyncio.Queue()

    async def post_user(self, i: int) -> bool:
        name = f"{self.label}-{i}-{uuid.uuid4().hex[:6]}@example.com"
        body = {"schemas": [USER_URN], "userName": name, "active": True, "password": "Pa55-word!",
                "groups": [], "name": {"givenName": "Load", "familyName": str(i)},
                "emails": [{"primary": True, "value": name, "type": "work"}]}
        async with self.http.post("Users", json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status == 201:
                self.names.append(name)
                self.ids.append(data["id"])
            return resp.status == 201

    async def lookup(self, i: int) -> bool:
        name = random.choice(self.names)
        params = {"filter": f'userName eq "{name.upper()}"', "startIndex": "1", "count": "100"}
        async with self.http.get("Users", params=params) as resp:
            data = await resp.json(content_type=None)
            return resp.status == 200 and data.get("totalResults") == 1

    async def make_groups(self, count: int) -> None:
        for g in range(count):
            async with self.http.post("Groups", json={"schemas": [GROUP_URN], "displayName": f"{self.label}-g{g}",
                                                      "members": []}) as resp:
                self.groups.put_nowait((await resp.json(content_type=None))["id"])

    async def add_member(self, i: int) -> bool:
        # A group is changed by one request at a time, as a provider serialises the changes of one group.
        gid = await self.groups.get()
        body = {"schemas": [PATCH_URN], "Operations": [{"op": "Add", "path": "members",
                                                         "value": [{"value": self.ids[i % len(self.ids)]}]}]}
        try:
            async with self.http.patch(f"Groups/{gid}", json=body) as resp:
                await resp.read()
                return resp.status in (200, 204)
        finally:
            self.groups.put_nowait(gid)


# ---- the raw API-server floor ----------------------------------------------------------------------
class RawTraffic:
    def __init__(self, label: str, api: client.ApiClient, namespace: str) -> None:
        self.label = label
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.shards: list[dict[str, Any]] = []
        self.free: asyncio.Queue[int] = asyncio.Queue()

    async def _create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.custom.create_namespaced_custom_object(
            API_GROUP, VERSION, self.namespace, plural, body)
        return obj

    async def create_user(self, i: int) -> bool:
        await self._create(USER.plural, {
            "apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": str(uuid.uuid4())},
            "spec": {"userName": f"{self.label}-{i}@example.com", "active": True}})
        return True

    def _claim(self, value: str, owner: str) -> Awaitable[dict[str, Any]]:
        return self._create(CLAIM.plural, {
            "apiVersion": API_VERSION, "kind": CLAIM.kind, "metadata": {"name": claim_name("User", value)},
            "spec": {"resourceKind": "User", "value": value, "owner": owner}})

    def _user(self, uid: str, value: str) -> Awaitable[dict[str, Any]]:
        return self._create(USER.plural, {
            "apiVersion": API_VERSION, "kind": USER.kind, "metadata": {"name": uid},
            "spec": {"userName": value, "active": True}})

    async def claim_then_create(self, i: int) -> bool:
        """What a unique create needs under this design: the name claim, then the resource."""
        uid, value = str(uuid.uuid4()), f"{self.label}-pair-{i}@example.com"
        await self._claim(value, uid)
        await self._user(uid, value)
        return True

    async def claim_with_create(self, i: int) -> bool:
        """The same two writes sent at once: the floor of a design that creates both concurrently
        and undoes the resource when the claim is lost."""
        uid, value = str(uuid.uuid4()), f"{self.label}-both-{i}@example.com"
        await asyncio.gather(self._claim(value, uid), self._user(uid, value))
        return True

    async def make_shards(self, count: int) -> None:
        for lane in range(count):
            gid = f"{self.label}-group-{lane}"
            number = shard_of("seed")
            self.shards.append(await self._create(SHARD.plural, {
                "apiVersion": API_VERSION, "kind": SHARD.kind,
                "metadata": {"name": shard_name(gid, number), "labels": {LABEL_GROUP: gid}},
                "spec": {"group": gid, "shard": number, "users": ["seed"], "groups": []}}))
            self.free.put_nowait(lane)

    async def rewrite_shard(self, i: int) -> bool:
        lane = await self.free.get()
        try:
            shard = self.shards[lane]
            shard["spec"]["users"].append(f"user-{i}")
            self.shards[lane] = await self.custom.replace_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, SHARD.plural, shard["metadata"]["name"], shard)
            return True
        finally:
            self.free.put_nowait(lane)


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


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_endpoint(port: int, namespace: str, kubeconfig: str, log: Path) -> subprocess.Popen[bytes]:
    """A ``litellm-scim endpoint`` on 127.0.0.1:``port``, once it is ready."""
    return start_process(
        [sys.executable, "-m", "litellm_scim.cli", "endpoint", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--namespace", namespace, "--kubeconfig", kubeconfig, "--log-level", "warning"],
        f"http://127.0.0.1:{port}/readyz", log)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = await kube.api_client(cluster.kubeconfig)
        skip_environment_lookups(api)  # as the endpoint does: the raw floor uses the same client setup
        async with api:
            await chart.apply_crds(api)
            namespace = f"bench-{uuid.uuid4().hex[:8]}"
            raw_namespace = f"{namespace}-raw"
            for ns in (namespace, raw_namespace):
                await chart.ensure_namespace(api, ns)
            _, token = await tokens.create_token(api, namespace, name="bench")

            port = peers.free_port()
            endpoint = start_endpoint(port, namespace, cluster.kubeconfig, state / "endpoint.log")
            procs.append(endpoint)
            ref_port = peers.free_port()
            reference = start_process(
                [str(Path(sys.executable).parent / "scim2-server"), "--hostname", "127.0.0.1", "--port",
                 str(ref_port), "--bearer-token", token],
                f"http://127.0.0.1:{ref_port}/ServiceProviderConfig", state / "scim2-server.log")
            procs.append(reference)

            print(f"traffic: {args.writes} POST /Users, {args.reads} lookups, {args.writes} member PATCHes, "
                  f"{args.concurrency} concurrent clients, {args.rounds} interleaved rounds", flush=True)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}/scim/v2/", headers=headers,
                                             connector=aiohttp.TCPConnector(limit=64)) as ours_http, \
                    aiohttp.ClientSession(base_url=f"http://127.0.0.1:{ref_port}/", headers=headers,
                                          connector=aiohttp.TCPConnector(limit=64)) as ref_http:
                ours, theirs = ScimTraffic("endpoint", ours_http), ScimTraffic("scim2-server", ref_http)
                # The floor: the same writes in the endpoint's namespace, where its watches (as any
                # controller's would) receive every change; and, for reference, where nobody watches.
                raw, unwatched = RawTraffic("raw", api, namespace), RawTraffic("unwatched", api, raw_namespace)
                c, r = args.concurrency, args.rounds
                posts = await interleaved({"endpoint": ours.post_user, "scim2-server": theirs.post_user,
                                           "raw": raw.create_user, "unwatched": unwatched.create_user,
                                           "raw pair": raw.claim_then_create,
                                           "raw concurrent pair": raw.claim_with_create,
                                           "unwatched pair": unwatched.claim_then_create}, args.writes, c, r)
                # Reads in one run each: scim2-server's development HTTP server stalls for ~1 s now and
                # then (its p99), which would dominate short slices and understate its throughput.
                lookups = await interleaved({"endpoint": ours.lookup, "scim2-server": theirs.lookup},
                                            args.reads, c, 1)
                for t in (ours, theirs):
                    await t.make_groups(c)
                for rt in (raw, unwatched):
                    await rt.make_shards(c)
                patches = await interleaved({"endpoint": ours.add_member, "scim2-server": theirs.add_member,
                                             "raw": raw.rewrite_shard, "unwatched": unwatched.rewrite_shard},
                                            args.writes, c, r)

            rss_before = rss_mib(endpoint.pid)
            fill_seconds = await fill(api, namespace, args.rss_users, args.rss_groups)
            # A replica (re)starting on a namespace that already holds them: the usual way to meet 10k users.
            endpoint.terminate()
            endpoint.wait(timeout=10)
            started = time.perf_counter()
            endpoint = start_endpoint(port, namespace, cluster.kubeconfig, state / "endpoint-restarted.log")
            procs.append(endpoint)
            ready_seconds = time.perf_counter() - started
            big = await wait_for_count(f"http://127.0.0.1:{port}/scim/v2/", token, args.rss_users)
            # One full scan renders every user once, as a first unindexed filter would.
            await timed_get(f"http://127.0.0.1:{port}/scim/v2/", token, {"filter": 'title eq "nobody"'})
            lookups_big = await big_lookups(f"http://127.0.0.1:{port}/scim/v2/", token, namespace, api, args)
            rss_after = rss_mib(endpoint.pid)
    finally:
        stop_processes(procs)
        cluster.stop()

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2) if b else float("nan")

    def by_server(name: str) -> dict[str, Any]:
        out = {"POST /Users": asdict(posts[name])}
        if name in lookups:
            out["GET /Users?filter"] = asdict(lookups[name])
        if f"{name} pair" in posts:
            out["POST /Users (claim + create)"] = asdict(posts[f"{name} pair"])
        if f"{name} concurrent pair" in posts:
            out["POST /Users (claim and create at once)"] = asdict(posts[f"{name} concurrent pair"])
        out["PATCH /Groups members"] = asdict(patches[name])
        return out

    p50 = {(k, op): by_server(k)[op]["p50_ms"] for k in ("endpoint", "raw", "unwatched", "scim2-server")
           for op in ("POST /Users", "PATCH /Groups members")}
    result = {
        "traffic": {"writes": args.writes, "reads": args.reads, "concurrency": args.concurrency,
                    "rounds": args.rounds},
        "endpoint": by_server("endpoint"),
        "scim2_server": by_server("scim2-server"),
        "raw_api_server": by_server("raw"),
        "raw_api_server_unwatched": by_server("unwatched"),
        "ratios": {
            "POST /Users p50 endpoint/raw create": ratio(p50["endpoint", "POST /Users"], p50["raw", "POST /Users"]),
            "POST /Users p50 endpoint/raw claim+create": ratio(p50["endpoint", "POST /Users"],
                                                               posts["raw pair"].p50_ms),
            "POST /Users p50 raw claim+create/raw create": ratio(posts["raw pair"].p50_ms,
                                                                 p50["raw", "POST /Users"]),
            "POST /Users p50 raw claim and create at once/raw create": ratio(posts["raw concurrent pair"].p50_ms,
                                                                             p50["raw", "POST /Users"]),
            "PATCH members p50 endpoint/raw shard rewrite": ratio(p50["endpoint", "PATCH /Groups members"],
                                                                   p50["raw", "PATCH /Groups members"]),
            "POST /Users p50 endpoint/raw create, unwatched namespace": ratio(
                p50["endpoint", "POST /Users"], p50["unwatched", "POST /Users"]),
            "PATCH members p50 endpoint/raw shard rewrite, unwatched namespace": ratio(
                p50["endpoint", "PATCH /Groups members"], p50["unwatched", "PATCH /Groups members"]),
            "lookup req/s endpoint/scim2-server": ratio(lookups["endpoint"].rps, lookups["scim2-server"].rps),
            "POST /Users p50 endpoint/scim2-server": ratio(p50["endpoint", "POST /Users"],
                                                           p50["scim2-server", "POST /Users"]),
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

        series = Series("endpoint lookups, 10k stored", [])
        await run_batch(series, range(args.reads), args.concurrency, lookup)
        return series.stats()


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """The rows as text columns, the first row a heading underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def save(result: dict[str, Any], path: Path, text: str) -> None:
    """Write the JSON result and print the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"\nwritten to {path}")


def table(result: dict[str, Any]) -> str:
    rows = [("operation", "server", "p50 ms", "p90 ms", "p99 ms", "req/s", "errors")]
    for op in ("POST /Users", "POST /Users (claim + create)", "POST /Users (claim and create at once)",
               "GET /Users?filter", "PATCH /Groups members"):
        for key, label in (("endpoint", "endpoint"), ("raw_api_server", "raw API server"),
                           ("raw_api_server_unwatched", "raw, unwatched ns"), ("scim2_server", "scim2-server")):
            stats = result[key].get(op)
            if stats:
                rows.append((op, label, f"{stats['p50_ms']:.1f}", f"{stats['p90_ms']:.1f}", f"{stats['p99_ms']:.1f}",
                             f"{stats['rps']:.0f}", str(stats["errors"])))
    big = result["memory"]["lookup_with_all_stored"]
    rows.append(("GET /Users?filter (10k users)", "endpoint", f"{big['p50_ms']:.1f}", f"{big['p90_ms']:.1f}",
                 f"{big['p99_ms']:.1f}", f"{big['rps']:.0f}", str(big["errors"])))
    lines = aligned(rows)
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices per operation")
    parser.add_argument("--rss-users", type=int, default=10_000)
    parser.add_argument("--rss-groups", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    save(result, args.out, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
