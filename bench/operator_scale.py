"""Scale benchmark of the operator: a restart on a converged enterprise directory, then a burst.

    python -m bench.operator_scale [--users 100000] [--groups 10000] [--members 20] [--burst 1000]
    python -m bench.operator_scale --series 1000,10000,100000     # groups = users / 10

Seeds converged state cheaply, then starts ``litellm-scim operator`` on it as a pod would after a
restart, and measures:
- RSS once idle, and the time from process start to idle (no LiteLLM call and the process using
  under 5 % of a core, for 15 s in a row; the quiet tail is not counted);
- every LiteLLM call the restart made, by endpoint, from the operator's own metrics (target: no
  write, at most one read per team);
- a burst of ``--burst`` member additions written as the endpoint writes them (ScimMemberShard
  updates, one member into each of ``--burst`` groups) while everything else rests: seconds until
  LiteLLM holds every one of them, against the same ``/team/member_add`` calls made directly by
  ``bench/litellm_floor.py`` in the same run (ratio 1.0 is the rate LiteLLM allows). The burst is
  written once every user's drift timer runs (``--burst-at``, 1.2 drift intervals after the start),
  so it shares LiteLLM with the drift checks of the whole directory, as it would at any later time.

Seeding, and why it is cheap: the custom resources are those the endpoint writes (the seeding helpers
of ``bench/scale.py``, without the endpoint's name claims, which the operator never reads), created
through the API server, and each gets the status the operator writes once it converged, built by the
operator's own status functions (``users._status_ok``, ``membership.status_ok`` and the handled spec
of ``bookkeeping``). LiteLLM gets the same users, teams and memberships straight into its
PostgreSQL: one user and one team are created through the admin API the way the operator creates
them, and every other row is a copy of those with its own ids (through the API, 100,000 users alone
take about half an hour). The proxy and the API server are started for the run alone (fresh
database, own etcd), so nothing else shares them; the proxy has never read the copied ids, so its
caches hold nothing stale.

Writes bench/results/operator_scale-<N>.json and prints a table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import aiohttp
import kopf
from kubernetes_asyncio import client

from bench import litellm_floor
from bench.endpoint_load import rss_mib
from bench.scale import Seeder, _object, each_size, machine, user_spec
from litellm_scim import chart, peers
from scim_common import kube
from scim_common.settings import OperatorSettings
from scim_contract import (
    API_GROUP,
    API_VERSION,
    GROUP,
    LABEL_GROUP,
    SHARD,
    USER,
    VERSION,
    ScimUserSpec,
    shard_name,
    shard_of,
)
from scim_operator import membership, users
from scim_operator.bookkeeping import StatusDiffBase
from scim_operator.litellm_api import member_add_slots
from scim_operator.main import ANNOTATION_PREFIX
from scim_operator.objects import desired_user, merged_metadata
from scim_operator.state import Memory, View

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests" / "operator"))
from operator_helpers import OperatorProcess, metric_sum  # noqa: E402

CALLS = "litellm_scim_operator_litellm_calls_total"
RECONCILES = "litellm_scim_operator_reconciles_total"
BURST_METRICS = ("litellm_scim_operator_drift_found_total", "litellm_scim_operator_drift_corrected_total",
                 RECONCILES)
READS = ("/user/info", "/team/info", "/key/list", "/user/list", "/v2/team/list", "/v2/team/list?team_id")
TAG = OperatorSettings.model_fields["owner_tag"].default
PGPORT = os.environ.get("LITELLM_PEER_PGPORT", "55432")


# ---- LiteLLM: copies of one user and one team the operator's way, straight into PostgreSQL ------
def psql(db: str, sql: str, stdin: str | None = None) -> str:
    out = subprocess.run(["psql", f"postgresql://postgres@127.0.0.1:{PGPORT}/{db}", "-v", "ON_ERROR_STOP=1",
                          "-qAtc", sql], input=stdin, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr[-2000:]}")
    return out.stdout


def _copy_rows(db: str, table: str, key: str, template: str, patches: list[dict[str, Any]]) -> None:
    """Insert one row per patch: the template row with the patch's columns replaced."""
    # CSV with quote and delimiter characters JSON never contains: no escaping needed.
    data = "\n".join(json.dumps(p) for p in patches) + "\n"
    psql(db, f"""CREATE TEMP TABLE p (v jsonb);
COPY p FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');
INSERT INTO "{table}" SELECT (jsonb_populate_record(t, p.v)).* FROM "{table}" t, p WHERE t.{key} = '{template}';""",  # noqa: S608 (our names)
         stdin=data)


async def seed_litellm(proxy: peers.LiteLLM, ns: str, people: dict[str, ScimUserSpec],
                       teams: dict[str, tuple[str, list[str]]]) -> float:
    db = f"litellm_{proxy.port}"
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {proxy.master_key}"}) as http:
        async def post(path: str, body: dict[str, Any]) -> None:
            async with http.post(proxy.url + path, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status} {await resp.text()}")

        await post("/user/new", {"user_id": "tpl-user", "user_email": "tpl@example.com", "user_alias": "tpl",
                                 "metadata": {TAG: f"{ns}/tpl-user"}, "auto_create_key": False})
        await post("/team/new", {"team_id": "tpl-team", "team_alias": "tpl", "metadata": {TAG: f"{ns}/tpl-team"}})
        await post("/team/member_add", {"team_id": "tpl-team", "member": [{"user_id": "tpl-user", "role": "user"}]})
        member = json.loads(psql(db, """SELECT members_with_roles->0 FROM "LiteLLM_TeamTable"
                                        WHERE team_id = 'tpl-team'"""))
        teams_of: dict[str, list[str]] = {}
        for gid, (_display, members) in teams.items():
            for uid in members:
                teams_of.setdefault(uid, []).append(gid)
        rows = []
        for name, spec in people.items():
            body = desired_user(name, spec).new_body(TAG, ns, name)
            rows.append({**body, "teams": teams_of.get(name, [])})
        _copy_rows(db, "LiteLLM_UserTable", "user_id", "tpl-user", rows)
        _copy_rows(db, "LiteLLM_TeamTable", "team_id", "tpl-team", [
            {"team_id": gid, "team_alias": display, "metadata": merged_metadata({}, TAG, ns, gid),
             "members_with_roles": [{**member, "user_id": uid, "user_email": people[uid].primary_email()}
                                    for uid in members]}
            for gid, (display, members) in teams.items()])
        pairs = "\n".join(json.dumps({"user_id": u, "team_id": g}) for g, (_d, ms) in teams.items() for u in ms)
        psql(db, """CREATE TEMP TABLE p (v jsonb);
COPY p FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');
INSERT INTO "LiteLLM_TeamMembership" (user_id, team_id) SELECT v->>'user_id', v->>'team_id' FROM p;""",
             stdin=pairs + "\n")
        await post("/team/delete", {"team_ids": ["tpl-team"]})
        await post("/user/delete", {"user_ids": ["tpl-user"]})
    return time.perf_counter() - t0


# ---- the custom resources, with the status the operator writes once converged ------------------------
class Converged:
    """The operator's own status functions over a view of what was seeded."""

    def __init__(self, shards: dict[str, list[tuple[str, tuple[str, ...], int]]], member_groups: dict[str, list[str]],
                 teams: dict[str, tuple[str, list[str]]]) -> None:
        self.memory = Memory()
        for gid, (_d, members) in teams.items():
            self.memory.members.in_team[gid] = set(members)
        self.view = View(memory=self.memory, users={}, shards=shards, member_groups=member_groups)
        self.diffbase = StatusDiffBase(prefix=ANNOTATION_PREFIX)

    def user(self, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        out = users.Outcome(user_id=name, blocked=[])
        handled = self.diffbase.handled(kopf.Body(cast(kopf.RawBody, obj)))
        return {**users._status_ok({}, obj, out, self.view, name), **handled}

    def group(self, obj: dict[str, Any]) -> dict[str, Any]:
        # With its handled spec recorded, as the operator leaves it: Kopf resumes the group on a
        # restart (without, it would run the creation handler instead).
        name = obj["metadata"]["name"]
        handled = self.diffbase.handled(kopf.Body(cast(kopf.RawBody, obj)))
        return {**membership.status_ok({}, obj, name, self.view, name), **handled}


async def seed_resources(api: client.ApiClient, ns: str, raw: dict[str, dict[str, Any]],
                         teams: dict[str, tuple[str, list[str]]]) -> tuple[float, dict[str, str],
                                                                           dict[str, dict[str, list[str]]]]:
    """Returns (seconds, group name -> uid, group -> shard name -> users)."""
    seeder = Seeder(api, ns)
    custom = seeder.custom
    shards: dict[str, list[tuple[str, tuple[str, ...], int]]] = {}
    contents: dict[str, dict[str, list[str]]] = {}
    member_groups: dict[str, list[str]] = {}
    for gid, (_d, members) in teams.items():
        by: dict[str, list[str]] = {}
        for m in members:
            by.setdefault(shard_name(gid, shard_of(m)), []).append(m)
            member_groups.setdefault(m, []).append(gid)
        contents[gid] = by
        shards[gid] = [(s, tuple(u), 0) for s, u in by.items()]
    converged = Converged(shards, member_groups, teams)
    uids: dict[str, str] = {}

    async def status(plural: str, obj: dict[str, Any], st: dict[str, Any]) -> None:
        async with seeder.sem:
            await custom.patch_namespaced_custom_object_status(
                API_GROUP, VERSION, ns, plural, obj["metadata"]["name"], {"status": st},
                _content_type="application/merge-patch+json")  # type: ignore[call-arg]

    async def one_user(name: str) -> None:
        body = _object(USER.kind, name, raw[name])
        async with seeder.sem:
            obj = await custom.create_namespaced_custom_object(API_GROUP, VERSION, ns, USER.plural, body)
        await status(USER.plural, obj, converged.user(obj))

    async def one_group(gid: str) -> None:
        display, _members = teams[gid]
        async with seeder.sem:
            obj = await custom.create_namespaced_custom_object(
                API_GROUP, VERSION, ns, GROUP.plural, _object(GROUP.kind, gid, {"displayName": display}))
        uids[gid] = obj["metadata"]["uid"]
        for shard, members in contents[gid].items():
            await seeder.create(SHARD.plural, shard_body(gid, uids[gid], shard, members))
        await status(GROUP.plural, obj, converged.group(obj))

    t0 = time.perf_counter()
    await asyncio.gather(*(one_user(n) for n in raw))
    await asyncio.gather(*(one_group(g) for g in teams))
    return time.perf_counter() - t0, uids, contents


def shard_body(gid: str, group_uid: str, shard: str, members: list[str]) -> dict[str, Any]:
    body = _object(SHARD.kind, shard, {"group": gid, "shard": int(shard.rsplit("-m", 1)[1]),
                                       "users": sorted(members), "groups": []})
    body["metadata"]["labels"] = {LABEL_GROUP: gid}
    body["metadata"]["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": GROUP.kind, "name": gid,
                                            "uid": group_uid, "blockOwnerDeletion": True}]
    return body


# ---- measuring --------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def calls_by_endpoint(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(CALLS + "{"):
            ep = line.split('endpoint="')[1].split('"')[0]
            out[ep] = out.get(ep, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


async def until_idle(operator: OperatorProcess, started: float, quiet: float = 15.0,
                     limit: float = 1800.0, groups: int = 0) -> dict[str, Any]:
    """Seconds from start until the last LiteLLM call or busy second before ``quiet`` idle seconds,
    and until ``groups`` group reconciles were counted (every group resumed)."""
    assert operator.proc is not None
    pid = operator.proc.pid
    last_busy = time.monotonic()
    calls: dict[str, int] = {}
    cpu = cpu_seconds(pid)
    peak = 0.0
    resumed: float | None = None
    while time.monotonic() - last_busy < quiet and time.monotonic() - started < limit:
        await asyncio.sleep(1.0)
        now_cpu = cpu_seconds(pid)
        try:
            text = await asyncio.to_thread(operator.metrics)
        except OSError:  # metrics not answered within 5 s: the process is busy, not idle
            last_busy = time.monotonic()
            continue
        now_calls = calls_by_endpoint(text)
        if resumed is None and metric_sum(text, RECONCILES, kind="group") >= groups:
            resumed = time.monotonic() - started
        peak = max(peak, rss_mib(pid))
        if now_calls != calls or now_cpu - cpu > 0.05:
            last_busy = time.monotonic()
        calls, cpu = now_calls, now_cpu
    return {"seconds_to_idle": round(last_busy - started, 1), "calls": calls, "rss_mib_peak": round(peak, 1),
            "rss_mib_idle": round(rss_mib(pid), 1), "cpu_seconds": round(cpu, 1),
            "idle": time.monotonic() - last_busy >= quiet,
            "groups_resumed_seconds": None if resumed is None else round(resumed, 1)}


async def burst(api: client.ApiClient, ns: str, proxy: peers.LiteLLM, people: list[str], uids: dict[str, str],
                contents: dict[str, dict[str, list[str]]], size: int, rng: random.Random) -> dict[str, Any]:
    """One new member into each of ``size`` groups, written as the endpoint writes shards; seconds
    until LiteLLM's database holds every one."""
    custom = client.CustomObjectsApi(api)
    chosen = rng.sample(sorted(contents), min(size, len(contents)))
    changes: list[tuple[str, str]] = []
    for gid in chosen:
        members = {u for us in contents[gid].values() for u in us}
        user = next(u for u in (rng.choice(people) for _ in range(100)) if u not in members)
        changes.append((gid, user))
    sem = asyncio.Semaphore(16)

    async def write(gid: str, user: str) -> None:
        shard = shard_name(gid, shard_of(user))
        async with sem:
            if shard in contents[gid]:
                contents[gid][shard].append(user)
                await custom.patch_namespaced_custom_object(
                    API_GROUP, VERSION, ns, SHARD.plural, shard, {"spec": {"users": sorted(contents[gid][shard])}},
                    _content_type="application/merge-patch+json")  # type: ignore[call-arg]
            else:
                contents[gid][shard] = [user]
                await custom.create_namespaced_custom_object(
                    API_GROUP, VERSION, ns, SHARD.plural, shard_body(gid, uids[gid], shard, [user]))

    # The values are uuids this run generated, nothing from outside.
    values = ",".join(f"('{g}','{u}')" for g, u in changes)
    query = f'SELECT count(*) FROM "LiteLLM_TeamMembership" m JOIN (VALUES {values}) v(g, u) '  # noqa: S608
    query += "ON m.team_id = v.g AND m.user_id = v.u"
    db = f"litellm_{proxy.port}"
    t0 = time.perf_counter()
    await asyncio.gather(*(write(g, u) for g, u in changes))
    written = time.perf_counter() - t0
    done = 0
    while time.perf_counter() - t0 < 1800:
        done = int(await asyncio.to_thread(psql, db, query))
        if done >= len(changes):
            break
        await asyncio.sleep(0.5)
    return {"changes": len(changes), "groups": len(chosen), "written_seconds": round(written, 2),
            "seconds": round(time.perf_counter() - t0, 2), "applied": done}


def memory_report(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """The live Python memory of the idle operator by owner (``memory_site/sitecustomize.py``)."""
    proc.send_signal(signal.SIGUSR2)
    for _ in range(600):
        if path.exists():
            return cast(dict[str, Any], json.loads(path.read_text()))
        time.sleep(1)  # nothing else of the run goes on meanwhile
    raise RuntimeError("no memory report within 600 s")


async def team_read_seconds(proxy: peers.LiteLLM, team_ids: list[str], teams: int) -> dict[str, Any]:
    """Median seconds of one team read, one call at a time, three ways: ``/team/info`` (which also
    reads the team's memberships and keys), ``/v2/team/list?team_id=`` (the team's row alone) and
    a ``/v2/team/list`` page of 100 rows, the restart's listing."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {proxy.master_key}"}) as http:
        async def timed(path: str, params: dict[str, str]) -> float:
            t0 = time.perf_counter()
            async with http.get(proxy.url + path, params=params) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status}")
            return time.perf_counter() - t0

        info = [await timed("/team/info", {"team_id": t}) for t in team_ids]
        row = [await timed("/v2/team/list", {"team_id": t}) for t in team_ids]
        pages = max(1, -(-teams // 100))
        page = [await timed("/v2/team/list", {"page": str(i % pages + 1), "page_size": "100", "sort_by": "team_id"})
                for i in range(len(team_ids))]
    return {"calls_each": len(team_ids), "team_info": round(statistics.median(info), 4),
            "team_list_one": round(statistics.median(row), 4), "team_list_page_100": round(statistics.median(page), 4)}


async def floor_of_burst(proxy: peers.LiteLLM, size: int, concurrency: int) -> dict[str, Any]:
    """The same number of one-member ``/team/member_add`` calls made directly (bench/litellm_floor)."""
    direct = litellm_floor.Direct(proxy.url, proxy.master_key)
    try:
        floor = await litellm_floor.run(direct, max(20, size // 50), size, 1, concurrency,
                                        member_add_slots(concurrency))
    finally:
        await direct.close()
    seconds = floor.phase_seconds["/team/member_add"]
    return {"member_add_calls": size, "seconds": round(seconds, 2), "per_second": round(size / seconds, 2),
            "summary": floor.summary()}


async def run(args: argparse.Namespace, n_users: int, n_groups: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="scim-opscale-"))
    os.environ.pop("KUBECONFIG", None)
    os.environ.pop("LITELLM_URL", None)  # a proxy of this run alone: its database is seeded directly
    cluster = peers.find_or_start_cluster(state / "k8s")
    proxy = peers.find_or_start_litellm()
    ns = "opscale"
    rng = random.Random(12)
    names = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_users)]
    raw = {name: user_spec(i) for i, name in enumerate(names)}
    people = {name: ScimUserSpec.model_validate(spec) for name, spec in raw.items()}
    gids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_groups)]
    teams = {gid: (f"Group {j}", rng.sample(names, min(args.members, n_users))) for j, gid in enumerate(gids)}
    result: dict[str, Any] = {"users": n_users, "groups": n_groups, "members_per_group": args.members,
                              "concurrency": args.concurrency, "drift_interval": args.drift_interval,
                              "machine": machine()}
    operator: OperatorProcess | None = None
    try:
        api = await kube.api_client(cluster.kubeconfig)
        async with api:
            await chart.apply_crds(api)
            await chart.ensure_namespace(api, ns)
            litellm_seconds = await seed_litellm(proxy, ns, people, teams)
            print(f"seeded LiteLLM in {litellm_seconds:.0f} s", flush=True)
            k8s_seconds, uids, contents = await seed_resources(api, ns, raw, teams)
            print(f"seeded resources in {k8s_seconds:.0f} s", flush=True)
            result["team_read_seconds"] = await team_read_seconds(  # own sample: the burst's choices stay as before
                proxy, random.Random(5).sample(gids, min(20, n_groups)), n_groups)
            print(f"team reads: {result['team_read_seconds']}", flush=True)
            result["seeding"] = {"litellm_seconds": round(litellm_seconds, 1), "resources_seconds": round(k8s_seconds)}

            operator = OperatorProcess(
                namespace=ns, kubeconfig=cluster.kubeconfig, litellm_url=proxy.url, master_key=proxy.master_key,
                log_path=state / "operator.log",
                extra={"drift-interval": str(args.drift_interval), "litellm-concurrency": str(args.concurrency),
                       "litellm-timeout": "60", "log-level": "warning"})
            report = state / "memory.json"
            if args.memory_profile:
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    [str(Path(__file__).parent / "memory_site"), os.environ.get("PYTHONPATH", "")])
                os.environ["SCIM_BENCH_MEMORY_REPORT"] = str(report)
                os.environ["SCIM_BENCH_TRACE_FRAMES"] = str(args.trace_frames)
                result["memory_profile"] = {"trace_frames": args.trace_frames}
            if args.pymalloc_off:
                os.environ["PYTHONMALLOC"] = "malloc"
                result["pythonmalloc"] = "malloc"
            started = time.monotonic()
            operator.start(timeout=300)
            restart = await until_idle(operator, started, limit=args.idle_limit, groups=n_groups)
            calls = restart["calls"]
            restart["reads"] = sum(n for ep, n in calls.items() if ep in READS)
            restart["writes"] = sum(n for ep, n in calls.items() if ep not in READS)
            restart["reconciles"] = int(metric_sum(operator.metrics(), RECONCILES))
            result["restart"] = restart
            print(f"restart: {restart}", flush=True)
            if args.memory_profile and operator.proc is not None:
                result["memory"] = memory_report(operator.proc, report)
                print(json.dumps(result["memory"], indent=1), flush=True)

            if args.burst and restart["idle"]:
                # Drift timers first fire 0.8-1.2 drift intervals after the start: from then on every
                # user is checked once per interval, and the burst has to share LiteLLM with that.
                burst_at = args.drift_interval * 1.2 if args.burst_at is None else args.burst_at
                await asyncio.sleep(max(0.0, started + burst_at - time.monotonic()))
                text = operator.metrics()
                before = calls_by_endpoint(text)
                counted = {m: metric_sum(text, m) for m in BURST_METRICS}
                result["burst"] = await burst(api, ns, proxy, names, uids, contents, args.burst, rng)
                text = operator.metrics()
                after = calls_by_endpoint(text)
                result["burst"]["calls"] = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
                # What else the operator did meanwhile: drift found and corrected, reconciles.
                result["burst"]["counted"] = {m.removeprefix("litellm_scim_operator_"): metric_sum(text, m) - n
                                              for m, n in counted.items()}
                result["burst"]["started_after_seconds"] = round(burst_at)
                result["burst"]["rss_mib_after"] = round(rss_mib(operator.proc.pid), 1) if operator.proc else None
                operator.stop()
                operator = None
                floor = await floor_of_burst(proxy, result["burst"]["changes"], args.concurrency)
                result["burst"]["floor"] = floor
                result["burst"]["ratio_to_floor"] = round(result["burst"]["seconds"] / floor["seconds"], 2)
                print(f"burst: {result['burst']}", flush=True)
    finally:
        if operator is not None:
            operator.stop()
        proxy.stop()
        cluster.stop()
    return result


def table(r: dict[str, Any]) -> str:
    rs = r["restart"]
    reads = r.get("team_read_seconds", {})
    rows = [
        ("operator RSS idle / peak", f"{rs['rss_mib_idle']} / {rs['rss_mib_peak']} MiB"),
        ("restart to idle", f"{rs['seconds_to_idle']} s ({rs['cpu_seconds']} CPU s)"),
        ("every group resumed after", f"{rs.get('groups_resumed_seconds')} s"),
        ("one team read: /team/info, listed row, page of 100",
         " / ".join(f"{reads.get(k)} s" for k in ("team_info", "team_list_one", "team_list_page_100"))),
        ("LiteLLM calls on restart", f"{rs['reads']} reads, {rs['writes']} writes: {rs['calls']}"),
    ]
    if "burst" in r:
        b = r["burst"]
        rows.append(("burst of member additions", f"{b['changes']} in {b['seconds']} s; direct floor "
                                                  f"{b['floor']['seconds']} s; ratio {b['ratio_to_floor']}"))
    width = max(len(a) for a, _ in rows)
    head = (f"{r['users']} users, {r['groups']} groups x {r['members_per_group']} members; "
            f"{r['machine']['cpus']} cpus, load {r['machine']['load_1m']}")
    return "\n".join([head, *(f"{a.ljust(width)}  {b}" for a, b in rows)])


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--burst", type=int, default=1000, help="member additions, one per group")
    parser.add_argument("--concurrency", type=int, default=8, help="--litellm-concurrency of the operator")
    parser.add_argument("--drift-interval", type=float, default=300.0)
    parser.add_argument("--burst-at", type=float, default=None,
                        help="seconds after the operator's start to write the burst (default 1.2 drift "
                             "intervals: every drift timer is running by then)")
    parser.add_argument("--series", default="", help="comma-separated user counts, groups = users / 10")
    parser.add_argument("--idle-limit", type=float, default=1800.0,
                        help="seconds to wait for the restarted operator to become idle")
    parser.add_argument("--label", default="", help="suffix of the result file")
    parser.add_argument("--memory-profile", action="store_true",
                        help="once idle, report the operator's live objects by type")
    parser.add_argument("--pymalloc-off", action="store_true",
                        help="run the operator with PYTHONMALLOC=malloc (glibc's allocator for everything)")
    parser.add_argument("--trace-frames", type=int, default=0,
                        help="with --memory-profile: also trace every allocation with this many frames and "
                             "report live memory by owner (many times slower: the run's timings mean nothing)")
    args = parser.parse_args()
    each_size(args, run, table, "operator_scale", args.label)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
