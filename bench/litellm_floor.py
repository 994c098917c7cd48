"""What the LiteLLM proxy itself allows: the minimum calls of a provisioning run, made directly.

    python -m bench.litellm_floor [--users 1000 --groups 100 --members 50 --concurrency 8]

A client that knows everything in advance and makes exactly the minimum calls (one ``/user/new`` per
user, one ``/team/new`` and one ``/team/member_add`` per group), with the same request shapes and the
same limits as the operator (``--concurrency`` calls in flight, of which ``member_add_slots`` may be
member additions). Nothing an operator does can converge faster than this on the same proxy, so the
convergence benchmark runs it in the same session, before and after the operator, and compares. It
also measures each kind of call alone (one in flight), which is what the proxy would give if it
scaled with parallel calls.

The objects it creates have their own ids and are deleted afterwards."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from litellm_scim import peers
from scim_operator.litellm_api import member_add_slots

KINDS = ("/user/new", "/team/new", "/team/member_add")


@dataclass
class Floor:
    """One run of the minimum calls: wall time and per-kind latency at the concurrency used."""

    concurrency: int
    member_concurrency: int
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)

    def mean(self, kind: str) -> float:
        return statistics.mean(self.latency[kind]) if self.latency.get(kind) else float("nan")

    def slots(self, kind: str) -> int:
        return self.member_concurrency if kind == "/team/member_add" else self.concurrency

    def bound(self, calls: dict[str, int]) -> float:
        """Sum over kinds of call: calls x mean latency / concurrency used."""
        return sum(n * self.mean(k) / self.slots(k) for k, n in calls.items())

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "member_add_concurrency": self.member_concurrency,
            "seconds": round(self.seconds, 2),
            "phase_seconds": {k: round(v, 2) for k, v in self.phase_seconds.items()},
            "mean_latency_s": {k: round(self.mean(k), 4) for k in KINDS if self.latency.get(k)},
            "calls": {k: len(v) for k, v in self.latency.items()},
        }


def minimum_calls(users: int, groups: int) -> dict[str, int]:
    return {"/user/new": users, "/team/new": groups, "/team/member_add": groups}


class Direct:
    """The admin API, called directly with the master key."""

    def __init__(self, url: str, master_key: str) -> None:
        self.url = url.rstrip("/")
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {master_key}"}, timeout=aiohttp.ClientTimeout(total=120)
        )

    async def post(self, path: str, body: dict[str, Any], out: list[float] | None = None) -> None:
        t0 = time.perf_counter()
        async with self.http.post(self.url + path, json=body) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status} {text[:300]}")
        if out is not None:
            out.append(time.perf_counter() - t0)

    async def close(self) -> None:
        await self.http.close()


async def run(
    direct: Direct, users: int, groups: int, members: int, concurrency: int, member_concurrency: int
) -> Floor:
    """Users first (all slots), then teams, then member additions, each phase as wide as allowed."""
    tag = uuid.uuid4().hex[:8]
    floor = Floor(concurrency, member_concurrency)
    slots = asyncio.Semaphore(concurrency)
    member_slots = asyncio.Semaphore(member_concurrency)
    user_ids = [f"floor-{tag}-u{i:05d}" for i in range(users)]
    team_ids = [f"floor-{tag}-g{j:04d}" for j in range(groups)]
    rnd = random.Random(7)
    lat = floor.latency

    async def call(path: str, body: dict[str, Any]) -> None:
        async with member_slots if path == "/team/member_add" else slots:
            await direct.post(path, body, lat.setdefault(path, []))

    phases = (
        (
            "/user/new",
            [
                {"user_id": u, "user_email": f"{u}@example.com", "user_alias": u.upper(), "auto_create_key": False}
                for u in user_ids
            ],
        ),
        ("/team/new", [{"team_id": t, "team_alias": f"Group {t}"} for t in team_ids]),
        (
            "/team/member_add",
            [
                {
                    "team_id": t,
                    "member": [{"user_id": u, "role": "user"} for u in rnd.sample(user_ids, min(members, users))],
                }
                for t in team_ids
            ],
        ),
    )
    start = time.perf_counter()
    try:
        for path, bodies in phases:
            t0 = time.perf_counter()
            await asyncio.gather(*(call(path, b) for b in bodies))
            floor.phase_seconds[path] = time.perf_counter() - t0
        floor.seconds = time.perf_counter() - start
    finally:
        for i in range(0, len(team_ids), 100):
            await direct.post("/team/delete", {"team_ids": team_ids[i : i + 100]})
        for i in range(0, len(user_ids), 100):
            await direct.post("/user/delete", {"user_ids": user_ids[i : i + 100]})
    return floor


async def measure(
    url: str, master_key: str, users: int, groups: int, members: int, concurrency: int
) -> tuple[Floor, Floor]:
    """(alone, together): each kind of call one at a time on a sample, then the full minimum run."""
    direct = Direct(url, master_key)
    try:
        alone = await run(direct, max(1, users // 20), max(1, groups // 20), members, 1, 1)
        together = await run(direct, users, groups, members, concurrency, member_add_slots(concurrency))
    finally:
        await direct.close()
    return alone, together


async def minimum_run(
    url: str, master_key: str, users: int, groups: int, members: int, concurrency: int
) -> Floor:
    """The full minimum run alone: the convergence benchmark repeats it after the operator's run, so
    that a machine getting faster or slower in between does not bias the comparison."""
    direct = Direct(url, master_key)
    try:
        return await run(direct, users, groups, members, concurrency, member_add_slots(concurrency))
    finally:
        await direct.close()


def report(alone: Floor, together: Floor, users: int, groups: int) -> dict[str, Any]:
    calls = minimum_calls(users, groups)
    return {
        "minimum_calls": calls,
        "one_at_a_time": alone.summary(),
        "at_concurrency": together.summary(),
        # Latency measured alone, divided by the concurrency used: what a proxy that scales would give.
        "bound_if_litellm_scaled_s": round(sum(n * alone.mean(k) / together.slots(k) for k, n in calls.items()), 2),
        "bound_at_measured_latency_s": round(together.bound(calls), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    proxy = peers.find_or_start_litellm()
    try:
        alone, together = asyncio.run(
            measure(proxy.url, proxy.master_key, args.users, args.groups, args.members, args.concurrency)
        )
    finally:
        proxy.stop()
    print(json.dumps(report(alone, together, args.users, args.groups), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
