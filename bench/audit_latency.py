"""What the audit trail's Events cost a SCIM write: two ``litellm-scim endpoint`` processes on one
namespace of the real API server, one with ``--audit-events`` and one with ``--no-audit-events``,
take turns answering the same Okta/Entra-shaped writes (POST /Users, then a PATCH of each user);
both write the audit log line. The Events are sent from a background queue, so the two should be
alike; the last column counts the Events the first one created.

    python -m bench.audit_latency [--writes N] [--concurrency C] [--rounds R]

Uses $SCIM_TEST_KUBECONFIG / $KUBECONFIG when it answers, else starts the local API server kit.
127.0.0.1 only. Writes bench/results/audit_latency.json."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from bench.endpoint_load import PATCH_URN, ScimTraffic, aligned, interleaved, save, start_process
from litellm_scim import chart, peers
from scim_common import kube, tokens

RESULTS = Path(__file__).resolve().parent / "results" / "audit_latency.json"
FLAGS = {"events on": "--audit-events", "events off": "--no-audit-events"}


async def patch_user(traffic: ScimTraffic, i: int) -> bool:
    body = {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "title", "value": f"t{i}"}]}
    async with traffic.http.patch(f"Users/{traffic.ids[i % len(traffic.ids)]}", json=body) as resp:
        await resp.read()
        return resp.status == 200


async def main(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="scim-bench-audit-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = await kube.api_client(cluster.kubeconfig)
        async with api:
            await chart.apply_crds(api)
            namespace = f"bench-audit-{uuid.uuid4().hex[:8]}"
            await chart.ensure_namespace(api, namespace)
            _, token = await tokens.create_token(api, namespace, name="bench")
            bases = {}
            for label, flag in FLAGS.items():
                port = peers.free_port()
                procs.append(start_process(
                    [sys.executable, "-m", "litellm_scim.cli", "endpoint", "--host", "127.0.0.1", "--port", str(port),
                     "--metrics-port", "0", "--namespace", namespace, "--kubeconfig", cluster.kubeconfig, flag],
                    f"http://127.0.0.1:{port}/readyz", state / f"endpoint-{flag}.log"))
                bases[label] = f"http://127.0.0.1:{port}/scim/v2/"
            headers = {"Authorization": f"Bearer {token}"}
            sessions = {label: aiohttp.ClientSession(base, headers=headers) for label, base in bases.items()}
            try:
                traffic = {label: ScimTraffic(label.replace(" ", "-"), s) for label, s in sessions.items()}
                posts = await interleaved({label: t.post_user for label, t in traffic.items()},
                                          args.writes, args.concurrency, args.rounds)
                patches = await interleaved({label: (lambda i, t=t: patch_user(t, i)) for label, t in traffic.items()},
                                            args.writes, args.concurrency, args.rounds)
            finally:
                for s in sessions.values():
                    await s.close()
            await asyncio.sleep(2)  # let the queue drain
            events = await client.CoreV1Api(api).list_namespaced_event(namespace)
            created = sum(1 for e in events.items if e.source and e.source.component == "litellm-scim-endpoint")
            await client.CoreV1Api(api).delete_namespace(namespace)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        cluster.stop()
    return {"writes": args.writes, "concurrency": args.concurrency,
            "POST /Users": {k: vars(v) for k, v in posts.items()},
            "PATCH /Users": {k: vars(v) for k, v in patches.items()},
            "events_created": created}


def table(result: dict[str, Any]) -> str:
    rows = [("operation", "endpoint", "p50 ms", "p90 ms", "p99 ms", "req/s", "errors")]
    for op in ("POST /Users", "PATCH /Users"):
        for label, s in result[op].items():
            rows.append((op, label, f"{s['p50_ms']:.1f}", f"{s['p90_ms']:.1f}", f"{s['p99_ms']:.1f}",
                         f"{s['rps']:.0f}", str(s["errors"])))
    return "\n".join([*aligned(rows), "", f"audit Events created (events on): {result['events_created']}"])


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices per operation")
    result = asyncio.run(main(parser.parse_args()))
    save(result, RESULTS, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
