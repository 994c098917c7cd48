"""Scale benchmark of the SCIM endpoint: a whole enterprise directory in one namespace.

Seeds N users and M groups with K members each, then restarts the endpoint on them and measures what
an identity provider's full import and daily sync cost. The objects are the ones the endpoint itself
writes (spec from the endpoint's own converters, the finalizer and last-modified annotation, one
ScimNameClaim per userName / displayName, members in ScimMemberShards), but they are created directly
through the API server (64 concurrent creates with the admin client): going through SCIM would cost
two sequential writes per user plus the endpoint's checks and take several times longer, and the
point here is what the endpoint does with them afterwards, not how fast they arrive.

Measured, per N:
- seeding rate; API-server object count of the product's kinds; etcd data-dir size (``du`` of the
  API server kit's ``etcd-data``; its WAL files are preallocated in 64 MB steps) and of its database
  file (``member/snap``), and per 10,000 users; API server and etcd RSS;
- endpoint: time from process start to ``/readyz`` (a restart on a namespace already holding
  everything), RSS when ready and after paging everything (rendered resources are cached);
- the API server's own time to serve the lists a restarting endpoint makes (every page of users,
  groups and member shards at the endpoint's page size, read but not decoded): each kind alone, and
  the three at once as the endpoint lists them. This is the floor of the endpoint's time to ready;
- time to page all users and all groups at ``count=100`` with the per-page p50/p99, and the p50
  of the first, middle and last tenth of the positions (independent of the position is the goal);
- lookups by ``userName eq``, ``externalId eq``, group ``displayName eq`` and ``members[value eq]``;
- one member PATCH into a K-member group and into a group of ``--big-group`` members.
The operator is not started: it would reconcile every user into a LiteLLM proxy first, which is
``bench/operator_convergence.py``'s subject.

    python -m bench.scale [--users 100000] [--groups 10000] [--members 20] [--big-group 50000]
    python -m bench.scale --series 10000,30000,100000    # each N in turn (groups scale along), then the plot

Always starts its own API server (the local kit) so etcd's size is the product's alone. Writes
bench/results/scale-<N>.json and bench/results/scale.svg (RSS and page latency against N, from every
scale-*.json present)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from kubernetes_asyncio import client

from bench.endpoint_load import _pct, rss_mib, start_endpoint, stop_processes
from litellm_scim import chart, peers
from scim_common import clock, kube, tokens
from scim_contract import (
    ANNOTATION_LAST_MODIFIED,
    API_GROUP,
    API_VERSION,
    CLAIM,
    FINALIZER,
    GROUP,
    LABEL_GROUP,
    SHARD,
    USER,
    VERSION,
    claim_name,
    shard_name,
    shard_of,
)
from scim_endpoint import convert, informer
from scim_endpoint.store import ANNOTATION_CLAIMED_AT

RESULTS = Path(__file__).resolve().parent / "results"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PAGE = 100


def pct(values: list[float], q: float) -> float:
    return round(_pct(values, q), 2)


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99),
            "max_ms": pct(values, 1.0)}


# ---- seeding: the objects the endpoint writes, straight into the API server ----------------------------
def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if kind in (USER.kind, GROUP.kind):
        metadata["annotations"] = {ANNOTATION_LAST_MODIFIED: clock.rfc3339()}
        metadata["finalizers"] = [FINALIZER]
    if kind == CLAIM.kind:
        metadata["annotations"] = {ANNOTATION_CLAIMED_AT: clock.rfc3339()}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def user_spec(i: int) -> dict[str, Any]:
    """An Okta-shaped user, through the endpoint's own conversion."""
    name = f"user{i:06d}@example.com"
    body = {"schemas": [USER_URN, ENTERPRISE_URN], "userName": name, "externalId": f"00u{i:017d}",
            "active": True, "displayName": f"User {i}", "name": {"givenName": "User", "familyName": str(i)},
            "emails": [{"primary": True, "value": name, "type": "work"}],
            ENTERPRISE_URN: {"department": f"dept-{i % 50}"}}
    return convert.user_to_spec(convert.from_request(body, "User"))


class Seeder:
    def __init__(self, api: client.ApiClient, namespace: str, concurrency: int = 64) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.sem = asyncio.Semaphore(concurrency)
        self.created: dict[str, int] = {}

    async def create(self, plural: str, body: dict[str, Any]) -> None:
        async with self.sem:
            for attempt in range(5):
                try:
                    resp = await self.custom.create_namespaced_custom_object(
                        API_GROUP, VERSION, self.namespace, plural, body, _preload_content=False)
                    await resp.read()
                    break
                except client.ApiException as exc:
                    if exc.status == 409:
                        break
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
        self.created[plural] = self.created.get(plural, 0) + 1

    async def users(self, ids: list[str]) -> None:
        async def one(i: int, uid: str) -> None:
            spec = user_spec(i)
            await self.create(CLAIM.plural, _object(CLAIM.kind, claim_name("User", spec["userName"]), {
                "resourceKind": "User", "value": spec["userName"], "owner": uid}))
            await self.create(USER.plural, _object(USER.kind, uid, spec))

        await asyncio.gather(*(one(i, uid) for i, uid in enumerate(ids)))

    async def group(self, gid: str, name: str, members: list[str]) -> None:
        await self.create(CLAIM.plural, _object(CLAIM.kind, claim_name("Group", name), {
            "resourceKind": "Group", "value": name, "owner": gid}))
        async with self.sem:
            group = await self.custom.create_namespaced_custom_object(
                API_GROUP, VERSION, self.namespace, GROUP.plural, _object(GROUP.kind, gid, {"displayName": name}))
        self.created[GROUP.plural] = self.created.get(GROUP.plural, 0) + 1
        by_shard: dict[int, list[str]] = {}
        for m in members:
            by_shard.setdefault(shard_of(m), []).append(m)
        for number, users in by_shard.items():
            body = _object(SHARD.kind, shard_name(gid, number),
                           {"group": gid, "shard": number, "users": users, "groups": []})
            body["metadata"]["labels"] = {LABEL_GROUP: gid}
            body["metadata"]["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": GROUP.kind, "name": gid,
                                                    "uid": group["metadata"]["uid"], "blockOwnerDeletion": True}]
            await self.create(SHARD.plural, body)


# ---- measuring -----------------------------------------------------------------------------------------
def du_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pid_rss(pid_file: Path) -> float:
    try:
        return round(rss_mib(int(pid_file.read_text().split()[0])), 1)
    except (OSError, ValueError, IndexError):
        return float("nan")


async def list_all(custom: client.CustomObjectsApi, namespace: str, plural: str) -> tuple[float, int]:
    """(seconds, objects) for listing every ``plural`` in pages of the endpoint's size, each page read
    as bytes; only the continue token is decoded (msgspec skips the items unparsed)."""
    decode = msgspec.json.Decoder(ListPage).decode
    started, count, cont = time.perf_counter(), 0, ""
    while True:
        kwargs: dict[str, Any] = {"limit": informer.PAGE}
        if cont:
            kwargs["_continue"] = cont
        resp = await custom.list_namespaced_custom_object(API_GROUP, VERSION, namespace, plural,
                                                          _preload_content=False, **kwargs)
        page = decode(await resp.read())
        count += len(page.items)
        cont = page.metadata.continue_
        if not cont:
            return round(time.perf_counter() - started, 2), count


class ListPage(msgspec.Struct):
    items: list[msgspec.Raw]
    metadata: informer.ListMeta


async def apiserver_lists(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The API server's own time for the endpoint's initial lists: each kind alone, then all at once."""
    custom = client.CustomObjectsApi(api)
    plurals = (USER.plural, GROUP.plural, SHARD.plural)
    out: dict[str, Any] = {}
    for plural in plurals:
        seconds, count = await list_all(custom, namespace, plural)
        out[plural] = {"seconds": seconds, "objects": count}
    started = time.perf_counter()
    await asyncio.gather(*(list_all(custom, namespace, plural) for plural in plurals))
    out["all_at_once_seconds"] = round(time.perf_counter() - started, 2)
    return out


async def page_all(http: aiohttp.ClientSession, endpoint: str, total: int) -> dict[str, Any]:
    """Page through a whole collection as Okta's import does: startIndex 1, 101, ... at count 100."""
    latencies: list[tuple[int, float]] = []
    seen: set[str] = set()
    started = time.perf_counter()
    start = 1
    while True:
        t0 = time.perf_counter()
        async with http.get(endpoint, params={"startIndex": str(start), "count": str(PAGE)}) as resp:
            data = await resp.json(content_type=None)
        latencies.append((start, time.perf_counter() - t0))
        resources = data.get("Resources") or []
        seen.update(r["id"] for r in resources)
        if not resources or start + PAGE > int(data["totalResults"]):
            break
        start += PAGE
    wall = time.perf_counter() - started
    values = [v for _, v in latencies]
    tenth = max(1, len(values) // 10)
    return {"seconds": round(wall, 2), "pages": len(values), "distinct": len(seen), "expected": total,
            **stats(values), "first_tenth_p50_ms": pct(values[:tenth], 0.5),
            "middle_tenth_p50_ms": pct(values[len(values) // 2 - tenth // 2:][:tenth], 0.5),
            "last_tenth_p50_ms": pct(values[-tenth:], 0.5)}


async def timed(http: aiohttp.ClientSession, method: str, path: str, n: int, params: Any = None,
                body: Any = None, expect: int = 200, check: Any = None) -> dict[str, float]:
    values: list[float] = []
    errors = 0
    for i in range(n):
        p = params(i) if callable(params) else params
        b = body(i) if callable(body) else body
        t0 = time.perf_counter()
        async with http.request(method, path(i) if callable(path) else path, params=p, json=b) as resp:
            data = await resp.read()
        values.append(time.perf_counter() - t0)
        if resp.status != expect or (check is not None and not check(json.loads(data))):
            errors += 1
    return {**stats(values), "errors": errors}


def one_result(data: dict[str, Any]) -> bool:
    return int(data.get("totalResults", 0)) == 1


async def run(args: argparse.Namespace, users: int, groups: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="scim-scale-"))
    # Our own API server, never one from $KUBECONFIG: etcd's size must be this run's objects alone.
    os.environ.pop("KUBECONFIG", None)
    cluster = peers.find_or_start_cluster(state / "k8s")
    assert cluster.state_dir is not None
    etcd_dir = cluster.state_dir / "etcd-data"
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"users": users, "groups": groups, "members_per_group": args.members,
                              "big_group": min(args.big_group, users // 2), "machine": machine()}
    try:
        api = await kube.api_client(cluster.kubeconfig)
        async with api:
            await chart.apply_crds(api)
            namespace = "scale"
            await chart.ensure_namespace(api, namespace)
            _, token = await tokens.create_token(api, namespace, name="bench")
            etcd_empty = du_bytes(etcd_dir)
            apiserver_empty = pid_rss(cluster.state_dir / "apiserver.pid")

            seeder = Seeder(api, namespace)
            rng = random.Random(12)
            ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(users)]
            t0 = time.perf_counter()
            await seeder.users(ids)
            user_seconds = time.perf_counter() - t0
            print(f"seeded {users} users in {user_seconds:.0f} s", flush=True)
            gids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(groups)]
            big = min(args.big_group, users // 2)
            t0 = time.perf_counter()
            await asyncio.gather(*(seeder.group(gid, f"Group {g}", rng.sample(ids, min(args.members, users)))
                                   for g, gid in enumerate(gids[1:], start=1)))
            await seeder.group(gids[0], "Group big", ids[:big])
            group_seconds = time.perf_counter() - t0
            print(f"seeded {groups} groups in {group_seconds:.0f} s", flush=True)
            objects = dict(seeder.created)
            result["seeding"] = {"users_per_second": round(users / user_seconds), "user_seconds": round(user_seconds),
                                 "group_seconds": round(group_seconds), "objects": objects,
                                 "objects_total": sum(objects.values())}
            etcd_full = du_bytes(etcd_dir)
            etcd_db = du_bytes(etcd_dir / "member" / "snap")
            result["cluster"] = {
                "etcd_bytes_empty": etcd_empty, "etcd_bytes": etcd_full, "etcd_db_bytes": etcd_db,
                "etcd_bytes_per_10k_users": round((etcd_full - etcd_empty) * 10_000 / users),
                "objects_per_10k_users": round(sum(objects.values()) * 10_000 / users),
                "apiserver_rss_mib_empty": apiserver_empty,
                "apiserver_rss_mib": pid_rss(cluster.state_dir / "apiserver.pid"),
                "etcd_rss_mib": pid_rss(cluster.state_dir / "etcd.pid"),
            }

            # What the API server alone needs to serve the lists a restart makes (the floor of "ready").
            result["cluster"]["apiserver_list"] = await apiserver_lists(api, namespace)
            print(f"API server lists: {result['cluster']['apiserver_list']}", flush=True)

            # The endpoint (re)starting on a namespace that already holds everything.
            port = peers.free_port()
            t0 = time.perf_counter()
            endpoint = start_endpoint(port, namespace, cluster.kubeconfig, state / "endpoint.log")
            ready = time.perf_counter() - t0
            procs.append(endpoint)
            ep: dict[str, Any] = {"seconds_to_ready": round(ready, 2), "rss_mib_ready": round(rss_mib(endpoint.pid), 1)}
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}/scim/v2/", headers=headers) as http:
                ep["page_users"] = await page_all(http, "Users", users)
                print(f"paged users: {ep['page_users']}", flush=True)
                ep["page_groups"] = await page_all(http, "Groups", groups)
                print(f"paged groups: {ep['page_groups']}", flush=True)
                ep["rss_mib_after_paging"] = round(rss_mib(endpoint.pid), 1)
                n = args.lookups
                pick = [rng.randrange(users) for _ in range(n)]
                ep["lookup_userName"] = await timed(
                    http, "GET", "Users", n, check=one_result,
                    params=lambda i: {"filter": f'userName eq "{user_spec(pick[i])["userName"]}"'})
                ep["lookup_externalId"] = await timed(
                    http, "GET", "Users", n, params=lambda i: {"filter": f'externalId eq "00u{pick[i]:017d}"'},
                    check=one_result)
                gpick = [rng.randrange(1, groups) for _ in range(n)]
                ep["lookup_group_displayName"] = await timed(
                    http, "GET", "Groups", n, params=lambda i: {"filter": f'displayName eq "Group {gpick[i]}"',
                                                                "excludedAttributes": "members"},
                    check=one_result)
                # Okta asks which groups hold a user this way; few asks, it scans every group.
                ep["lookup_members_value"] = await timed(
                    http, "GET", "Groups", max(3, n // 20),
                    params=lambda i: {"filter": f'members[value eq "{ids[big + pick[i] % max(1, users - big)]}"]',
                                      "excludedAttributes": "members"})

                def add(i: int) -> dict[str, Any]:
                    return {"schemas": [PATCH_URN], "Operations": [
                        {"op": "Add", "path": "members", "value": [{"value": ids[(big + i) % users]}]}]}

                reps = args.patches
                ep["patch_small_group"] = await timed(http, "PATCH", f"Groups/{gids[1]}", reps, body=add, expect=204)
                ep["patch_big_group"] = await timed(http, "PATCH", f"Groups/{gids[0]}", reps, body=add, expect=204)
                ep["rss_mib_end"] = round(rss_mib(endpoint.pid), 1)
            result["endpoint"] = ep
            result["cluster"]["apiserver_rss_mib_end"] = pid_rss(cluster.state_dir / "apiserver.pid")
    finally:
        stop_processes(procs)
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
    return result


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ---- report --------------------------------------------------------------------------------------------
def table(r: dict[str, Any]) -> str:
    ep, cl = r["endpoint"], r["cluster"]
    rows = [("measure", "value")]
    rows += [
        ("objects (all kinds)", str(r["seeding"]["objects_total"])),
        ("objects per 10k users", str(cl["objects_per_10k_users"])),
        ("etcd data dir", f"{cl['etcd_bytes'] / 2**20:.0f} MiB, of which database {cl['etcd_db_bytes'] / 2**20:.0f} "
                          f"MiB ({cl['etcd_bytes_per_10k_users'] / 2**20:.1f} MiB data dir per 10k users)"),
        ("API server RSS", f"{cl['apiserver_rss_mib_empty']} -> {cl['apiserver_rss_mib']} MiB"),
        ("etcd RSS", f"{cl['etcd_rss_mib']} MiB"),
        ("API server serving the lists", "; ".join(
            f"{k} {v['seconds']} s ({v['objects']})" for k, v in cl["apiserver_list"].items() if isinstance(v, dict))
         + f"; all at once {cl['apiserver_list']['all_at_once_seconds']} s"),
        ("endpoint start to ready", f"{ep['seconds_to_ready']} s"),
        ("endpoint RSS ready / paged / end", f"{ep['rss_mib_ready']} / {ep['rss_mib_after_paging']} / "
                                            f"{ep['rss_mib_end']} MiB"),
    ]
    for key, label in (("page_users", "page all users"), ("page_groups", "page all groups")):
        p = ep[key]
        rows.append((label, f"{p['seconds']} s, {p['pages']} pages, p50 {p['p50_ms']} / p99 {p['p99_ms']} ms; "
                            f"p50 first/middle/last tenth {p['first_tenth_p50_ms']}/{p['middle_tenth_p50_ms']}/"
                            f"{p['last_tenth_p50_ms']} ms"))
    for key in ("lookup_userName", "lookup_externalId", "lookup_group_displayName", "lookup_members_value",
                "patch_small_group", "patch_big_group"):
        s = ep[key]
        rows.append((key, f"p50 {s['p50_ms']} / p99 {s['p99_ms']} ms ({s['n']}, {s['errors']} errors)"))
    width = max(len(a) for a, _ in rows)
    head = (f"{r['users']} users, {r['groups']} groups x {r['members_per_group']} members (+1 of {r['big_group']}); "
            f"{r['machine']['cpus']} cpus, load {r['machine']['load_1m']}")
    return "\n".join([head, *(f"{a.ljust(width)}  {b}" for a, b in rows)])


def plot(out: Path) -> None:
    """A small SVG of endpoint RSS and page p99 against N, from every scale-*.json (no plotting
    library needed)."""
    runs = []
    for f in sorted(RESULTS.glob("scale-[0-9]*.json")):
        r = json.loads(f.read_text())
        if "endpoint" in r:
            runs.append(r)
    runs.sort(key=lambda r: r["users"])
    if not runs:
        return
    series = [
        ("endpoint RSS after paging (MiB)", [r["endpoint"]["rss_mib_after_paging"] for r in runs], "#1f77b4"),
        ("users page p99 (ms)", [r["endpoint"]["page_users"]["p99_ms"] for r in runs], "#d62728"),
        ("users page p50 (ms)", [r["endpoint"]["page_users"]["p50_ms"] for r in runs], "#ff9896"),
    ]
    xs = [r["users"] for r in runs]
    w, h, pad = 640, 300, 50
    xmax = max(xs) * 1.05
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{len(series) * h}" '
             f'font-family="sans-serif" font-size="12">']
    for k, (label, ys, colour) in enumerate(series):
        top = k * h
        ymax = max(max(ys) * 1.15, 1e-9)

        def px(x: float, y: float, top: int = top, ymax: float = ymax) -> tuple[float, float]:
            return pad + x / xmax * (w - 2 * pad), top + h - pad - y / ymax * (h - 2 * pad)

        parts.append(f'<text x="{pad}" y="{top + 20}">{label} against users</text>')
        parts.append(f'<line x1="{pad}" y1="{top + h - pad}" x2="{w - pad}" y2="{top + h - pad}" stroke="black"/>')
        parts.append(f'<line x1="{pad}" y1="{top + pad}" x2="{pad}" y2="{top + h - pad}" stroke="black"/>')
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in zip(xs, ys, strict=True)))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in zip(xs, ys, strict=True):
            a, b = px(x, y)
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
            parts.append(f'<text x="{a:.1f}" y="{b - 8:.1f}" text-anchor="middle">{y:g}</text>')
            parts.append(f'<text x="{a:.1f}" y="{top + h - pad + 16}" text-anchor="middle">{x:,}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n")


def each_size(args: argparse.Namespace, run: Callable[[argparse.Namespace, int, int], Awaitable[dict[str, Any]]],
              table: Callable[[dict[str, Any]], str], stem: str, label: str = "") -> None:
    """One run per size of ``--series`` (groups = users / 10), else of ``--users``/``--groups``;
    each result in bench/results/<stem>-<users><label>.json and printed as a table."""
    sizes = [(int(n), int(n) // 10) for n in args.series.split(",") if n] or [(args.users, args.groups)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for users, groups in sizes:
        result = asyncio.run(run(args, users, groups))
        out = RESULTS / f"{stem}-{users}{label}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(table(result))
        print(f"written to {out}", flush=True)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=20, help="members of each group")
    parser.add_argument("--big-group", type=int, default=50_000,
                        help="members of the one big group (at most half the users)")
    parser.add_argument("--lookups", type=int, default=200, help="requests per lookup kind")
    parser.add_argument("--patches", type=int, default=20, help="member PATCHes per group size")
    parser.add_argument("--series", default="", help="comma-separated user counts, groups = users / 10")
    args = parser.parse_args()
    each_size(args, run, table, "scale")
    plot(RESULTS / "scale.svg")
    print(f"plot: {RESULTS / 'scale.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
