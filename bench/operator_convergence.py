"""Convergence benchmark of the operator on the real peers (API server + LiteLLM proxy).

    python -m bench.operator_convergence [--users 1000 --groups 100 --members 50 --concurrency 8]

Pushes N users and M groups of K members into a fresh namespace through a real ``litellm-scim
endpoint`` (SCIM POST /Users, POST /Groups with members; ``--via resources`` writes the custom resources
directly instead) while ``litellm-scim operator`` runs as a subprocess, then measures:
- time until LiteLLM matches (every user and team present, every team's members exact),
- write -> applied latency per resource (from the SCIM 201 until a watch sees Synced=True),
- deactivation -> key refused latency (a real virtual key polled on /v1/models until 401),
- LiteLLM calls made (the operator's own metrics) against the minimum needed, and
- the operator's RSS.
The target: total convergence within 1.3x of (minimum calls x measured per-call latency / concurrency).
Results go to bench/results/operator_convergence.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch

import scim_contract as c
from litellm_scim import kube, peers, tokens

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "operator"))
from operator_helpers import OperatorProcess, metric_sum  # noqa: E402

CALLS = "litellm_scim_operator_litellm_calls_total"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Pusher:
    """Writes users and groups, remembering the resource name (SCIM id) and the time of each write."""

    def __init__(self, writers: int) -> None:
        self.ids: dict[str, str] = {}
        self.written: dict[str, float] = {}
        self.limit = asyncio.Semaphore(writers)

    async def user(self, login: str) -> None:
        raise NotImplementedError

    async def group(self, name: str, member_ids: list[str]) -> None:
        raise NotImplementedError

    async def deactivate(self, user_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class ResourcePusher(Pusher):
    """ScimUser/ScimGroup/ScimMemberShard objects exactly as the endpoint writes them."""

    def __init__(self, objects: client.CustomObjectsApi, ns: str, writers: int) -> None:
        super().__init__(writers)
        self.objects = objects
        self.ns = ns

    async def _create(
        self, kind: c.ResourceKind, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
    ) -> None:
        body = {
            "apiVersion": c.API_VERSION,
            "kind": kind.kind,
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": spec,
        }
        async with self.limit:
            await self.objects.create_namespaced_custom_object(
                c.API_GROUP, c.VERSION, self.ns, kind.plural, body
            )

    async def user(self, login: str) -> None:
        await self._create(c.USER, login, {"userName": f"{login}@example.com", "displayName": login.upper()})
        self.ids[login] = login
        self.written[f"{c.USER.plural}/{login}"] = time.monotonic()

    async def group(self, name: str, member_ids: list[str]) -> None:
        shards: dict[int, list[str]] = {}
        for m in member_ids:
            shards.setdefault(c.shard_of(m), []).append(m)
        await self._create(c.GROUP, name, {"displayName": f"Group {name}"})
        await asyncio.gather(
            *(
                self._create(
                    c.SHARD,
                    c.shard_name(name, shard),
                    {"group": name, "shard": shard, "users": sorted(ids), "groups": []},
                    {c.LABEL_GROUP: name},
                )
                for shard, ids in shards.items()
            )
        )
        self.ids[name] = name
        self.written[f"{c.GROUP.plural}/{name}"] = time.monotonic()

    async def deactivate(self, user_id: str) -> None:
        await self.objects.patch_namespaced_custom_object(
            c.API_GROUP,
            c.VERSION,
            self.ns,
            c.USER.plural,
            user_id,
            {"spec": {"active": False}},
            _content_type="application/merge-patch+json",
        )


class ScimPusher(Pusher):
    """SCIM requests into a real ``litellm-scim endpoint`` process, as an IdP sends them."""

    def __init__(self, url: str, token: str, proc: subprocess.Popen[bytes], writers: int) -> None:
        super().__init__(writers)
        self.url = url
        self.proc = proc
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        )

    @classmethod
    async def start(
        cls, api: client.ApiClient, ns: str, kubeconfig: str, state: Path, writers: int
    ) -> ScimPusher:
        _, token = await tokens.create_token(api, ns, name="bench")
        port = peers.free_port()
        log = (state / "endpoint.log").open("ab")
        proc = subprocess.Popen(  # noqa: ASYNC220 -- started once, before anything is measured
            [
                sys.executable,
                "-m",
                "litellm_scim.cli",
                "endpoint",
                "--namespace",
                ns,
                "--kubeconfig",
                kubeconfig,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as probe:
            while True:
                try:
                    async with probe.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("SCIM endpoint did not become ready; see endpoint.log")
                await asyncio.sleep(0.2)
        return cls(f"http://127.0.0.1:{port}/scim/v2", token, proc, writers)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.limit, self.http.post(self.url + path, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 201:
                raise RuntimeError(f"POST {path}: {resp.status} {data}")
            return data

    async def user(self, login: str) -> None:
        created = await self._post(
            "/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"{login}@example.com",
                "displayName": login.upper(),
                "active": True,
            },
        )
        self.ids[login] = created["id"]
        self.written[f"{c.USER.plural}/{created['id']}"] = time.monotonic()

    async def group(self, name: str, member_ids: list[str]) -> None:
        created = await self._post(
            "/Groups",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": f"Group {name}",
                "members": [{"value": m} for m in member_ids],
            },
        )
        self.ids[name] = created["id"]
        self.written[f"{c.GROUP.plural}/{created['id']}"] = time.monotonic()

    async def deactivate(self, user_id: str) -> None:
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        }
        async with self.http.patch(f"{self.url}/Users/{user_id}", json=body) as resp:
            if resp.status not in (200, 204):
                raise RuntimeError(f"PATCH active: {resp.status} {await resp.text()}")

    async def close(self) -> None:
        await self.http.close()
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 15)


class Synced:
    """Watches the namespace and records when each resource first reports Synced=True (and, for
    groups, all its members in LiteLLM)."""

    def __init__(self, api: client.ApiClient, ns: str, members: dict[str, int]) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.ns = ns
        self.members = members
        self.seen: dict[str, float] = {}
        self.expected: set[str] = set()
        self.done = asyncio.Event()
        self.deactivated: dict[str, float] = {}

    def check(self) -> None:
        if self.expected and self.expected <= self.seen.keys():
            self.done.set()

    async def run(self, plural: str) -> None:
        while True:
            w = watch.Watch()
            try:
                async for event in w.stream(
                    self.objects.list_namespaced_custom_object,
                    c.API_GROUP,
                    c.VERSION,
                    self.ns,
                    plural,
                    timeout_seconds=300,
                ):
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    st = obj.get("status") or {}
                    conds = {x["type"]: x for x in st.get("conditions") or []}
                    if conds.get("Synced", {}).get("status") != "True":
                        continue
                    in_team = (st.get("litellm") or {}).get("members")
                    if plural == c.GROUP.plural and in_team != self.members.get(name):
                        continue
                    self.seen.setdefault(f"{plural}/{name}", time.monotonic())
                    self.check()
                    if conds.get("Ready", {}).get("reason") == "Deactivated":
                        self.deactivated.setdefault(name, time.monotonic())
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.2)
            finally:
                await w.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    proxy = peers.find_or_start_litellm()
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    api = await kube.api_client(cluster.kubeconfig)
    objects = client.CustomObjectsApi(api)
    operator: OperatorProcess | None = None
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {proxy.master_key}"})
    stack = contextlib.AsyncExitStack()
    try:
        await kube.apply_crds(api)
        await kube.ensure_namespace(api, ns)
        rnd = random.Random(7)
        users = [f"u{i:05d}-{ns}" for i in range(args.users)]
        groups = {
            f"g{j:04d}-{ns}": sorted(rnd.sample(users, min(args.members, len(users))))
            for j in range(args.groups)
        }

        # Per-call latency of this LiteLLM for the calls the minimum consists of, one at a time.
        lat = []

        async def timed(path: str, body: dict[str, Any]) -> None:
            t0 = time.perf_counter()
            async with http.post(f"{proxy.url}{path}", json=body) as resp:
                await resp.read()
                assert resp.status == 200, (path, resp.status)
            lat.append(time.perf_counter() - t0)

        probe_users = [f"probe-{i}-{ns}" for i in range(10)]
        for u in probe_users:
            await timed("/user/new", {"user_id": u, "auto_create_key": False})
        for i in range(3):
            await timed("/team/new", {"team_id": f"probe-{i}-{ns}"})
            await timed(
                "/team/member_add",
                {
                    "team_id": f"probe-{i}-{ns}",
                    "member": [{"user_id": u, "role": "user"} for u in probe_users],
                },
            )
        call_latency = statistics.mean(lat)
        await http.post(f"{proxy.url}/team/delete", json={"team_ids": [f"probe-{i}-{ns}" for i in range(3)]})
        await http.post(f"{proxy.url}/user/delete", json={"user_ids": probe_users})

        operator = OperatorProcess(
            namespace=ns,
            kubeconfig=cluster.kubeconfig,
            litellm_url=proxy.url,
            master_key=proxy.master_key,
            log_path=state / "operator.log",
            extra={
                "drift-interval": "3600",
                "litellm-concurrency": str(args.concurrency),
                "litellm-timeout": "60",
                "log-level": args.operator_log_level,
            },
        )
        operator.start()
        pusher: Pusher = (
            await ScimPusher.start(api, ns, cluster.kubeconfig, state, args.writers)
            if args.via == "scim"
            else ResourcePusher(objects, ns, args.writers)
        )
        stack.push_async_callback(pusher.close)
        synced = Synced(api, ns, {})
        watchers = [asyncio.create_task(synced.run(p)) for p in (c.USER.plural, c.GROUP.plural)]
        await asyncio.sleep(1.0)

        start = time.monotonic()
        await asyncio.gather(*(pusher.user(u) for u in users))
        await asyncio.gather(*(pusher.group(g, [pusher.ids[m] for m in mem]) for g, mem in groups.items()))
        pushed = time.monotonic() - start
        ids = pusher.ids
        written = pusher.written
        for g, mem in groups.items():
            synced.members[ids[g]] = len(mem)
        synced.expected = {f"{c.USER.plural}/{ids[u]}" for u in users} | {
            f"{c.GROUP.plural}/{ids[g]}" for g in groups
        }
        synced.check()
        expected = synced.expected
        deadline = time.monotonic() + args.timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(synced.done.wait(), args.timeout)
        converged_at = max(synced.seen.get(k, float("nan")) for k in expected)
        missing = len(expected - set(synced.seen))
        metrics_after_sync = operator.metrics()

        # Verify LiteLLM really matches (reads by the benchmark, after the operator's calls were counted).
        mismatches = 0
        details: list[str] = []
        sem = asyncio.Semaphore(8)

        async def check_user(u: str) -> None:
            nonlocal mismatches
            async with sem, http.get(f"{proxy.url}/user/info", params={"user_id": ids[u]}) as resp:
                data = await resp.json(content_type=None)
            if resp.status != 200 or (data.get("user_info") or {}).get("user_email") != f"{u}@example.com":
                mismatches += 1
                details.append(f"user {u}: HTTP {resp.status}")

        async def check_team(g: str) -> None:
            nonlocal mismatches
            async with sem, http.get(f"{proxy.url}/team/info", params={"team_id": ids[g]}) as resp:
                data = await resp.json(content_type=None)
            got = sorted(m["user_id"] for m in (data.get("team_info") or {}).get("members_with_roles") or [])
            want = sorted(ids[m] for m in groups[g])
            if resp.status != 200 or got != want:
                mismatches += 1
                details.append(
                    f"team {g}: missing {sorted(set(want) - set(got))[:5]}, "
                    f"extra {sorted(set(got) - set(want))[:5]}"
                )

        # The statuses said "synced"; LiteLLM is the judge. Re-check until it matches (or time runs out)
        # and count convergence at the moment it really does.
        rechecks = 0
        first_details: list[str] = []
        while True:
            mismatches = 0
            details.clear()
            await asyncio.gather(*(check_user(u) for u in users), *(check_team(g) for g in groups))
            if mismatches == 0:
                if rechecks:
                    converged_at = time.monotonic()  # conservative: the end of the first clean check
                break
            if not rechecks:
                first_details = list(details[:5])
            rechecks += 1
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)

        # Deactivation -> key refused, one user at a time, each with a real virtual key.
        deact: list[float] = []
        for u in users[: args.deactivations]:
            async with http.post(f"{proxy.url}/key/generate", json={"user_id": ids[u]}) as resp:
                key = (await resp.json())["key"]
            t0 = time.monotonic()
            await pusher.deactivate(ids[u])
            async with aiohttp.ClientSession() as plain:
                while time.monotonic() - t0 < 30:
                    auth = {"Authorization": f"Bearer {key}"}
                    async with plain.get(f"{proxy.url}/v1/models", headers=auth) as r:
                        if r.status == 401:
                            deact.append(time.monotonic() - t0)
                            break
                    await asyncio.sleep(0.02)

        for w in watchers:
            w.cancel()
        rss = hwm = 0
        assert operator.proc is not None
        proc_status = await asyncio.to_thread(Path(f"/proc/{operator.proc.pid}/status").read_text)
        for line in proc_status.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) // 1024

        made = metric_sum(metrics_after_sync, CALLS)
        by_endpoint = {}
        for line in metrics_after_sync.splitlines():
            if line.startswith(CALLS + "{"):
                ep = line.split('endpoint="')[1].split('"')[0]
                by_endpoint[ep] = by_endpoint.get(ep, 0) + float(line.rsplit(" ", 1)[1])
        op_latency_sum = metric_sum(metrics_after_sync, "litellm_scim_operator_litellm_call_seconds_sum")
        op_latency_count = metric_sum(metrics_after_sync, "litellm_scim_operator_litellm_call_seconds_count")
        op_latency = op_latency_sum / op_latency_count if op_latency_count else float("nan")
        # Minimum: one /user/new per user, one /team/new per group, one /team/member_add per group.
        minimum = args.users + 2 * args.groups
        total = converged_at - start
        bound_probe = minimum * call_latency / args.concurrency
        bound_operator = minimum * op_latency / args.concurrency
        apply_lat = [synced.seen[k] - written[k] for k in expected if k in synced.seen and k in written]
        result = {
            "pushed_via": "SCIM endpoint (litellm-scim endpoint)"
            if args.via == "scim"
            else "custom resources written directly",
            "users": args.users,
            "groups": args.groups,
            "members_per_group": args.members,
            "concurrency": args.concurrency,
            "push_seconds": round(pushed, 2),
            "converged": missing == 0 and mismatches == 0,
            "unsynced_resources": missing,
            "litellm_mismatches": mismatches,
            "mismatch_examples": details[:5],
            "litellm_rechecks_after_statuses_synced": rechecks,
            "first_check_mismatch_examples": first_details,
            "convergence_seconds": round(total, 2),
            "write_to_applied_p50_s": round(pct(apply_lat, 50), 3),
            "write_to_applied_p99_s": round(pct(apply_lat, 99), 3),
            "deactivation_to_key_refused_p50_s": round(pct(deact, 50), 3),
            "deactivation_to_key_refused_p99_s": round(pct(deact, 99), 3),
            "deactivations_measured": len(deact),
            "litellm_calls_made": int(made),
            "litellm_calls_minimum": minimum,
            "litellm_calls_by_endpoint": {k: int(v) for k, v in sorted(by_endpoint.items())},
            "per_call_latency_sequential_s": round(call_latency, 4),
            "per_call_latency_in_operator_mean_s": round(op_latency, 4),
            "target_seconds_1_3x_sequential_latency": round(1.3 * bound_probe, 2),
            "target_seconds_1_3x_operator_latency": round(1.3 * bound_operator, 2),
            "within_target_sequential_latency": total <= 1.3 * bound_probe,
            "within_target_operator_latency": total <= 1.3 * bound_operator,
            "operator_rss_mb": rss,
            "operator_peak_rss_mb": hwm,
        }
        return result
    finally:
        await stack.aclose()
        await http.close()
        if operator is not None:
            operator.stop()
        await api.close()
        cluster.stop()
        proxy.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8, help="--litellm-concurrency of the operator")
    parser.add_argument("--writers", type=int, default=16, help="parallel resource writes")
    parser.add_argument("--deactivations", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--via",
        choices=["scim", "resources"],
        default="scim",
        help="push through the SCIM endpoint (default) or write the custom resources directly",
    )
    parser.add_argument("--operator-log-level", default="warning")
    parser.add_argument("--out", default=str(HERE / "results" / "operator_convergence.json"))
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["converged"] else 1


if __name__ == "__main__":
    sys.exit(main())
