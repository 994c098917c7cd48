"""How fast a role from a ScimUserPolicy follows group membership, on the real peers.

    python -m bench.role_fallback [--admins 20 --others 200]

A fresh namespace with a real ``litellm-scim endpoint`` and ``litellm-scim operator``, two user
policies (``llm-admins``: members of the group ``llm-admins`` are ``proxy_admin``; ``everyone``, the
default: ``internal_user_viewer``), ``--others`` users who only get the default, and ``--admins``
users put into the admin group by one SCIM POST /Groups. Then, one at a time, each admin is removed
by a SCIM PATCH as Entra sends it, and the time from the PATCH's answer until LiteLLM's
``/user/info`` shows the default's role is measured (polled every 20 ms); the same for adding the
user back (until ``proxy_admin``). Prints a table and writes bench/results/role_fallback.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

import scim_contract as c
from litellm_scim import chart, peers
from scim_common import kube, tokens

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "operator"))
from operator_helpers import OperatorProcess, start_endpoint, stop_endpoint  # noqa: E402

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
POLL = 0.02


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def role_of(http: aiohttp.ClientSession, url: str, user_id: str) -> str | None:
    async with http.get(f"{url}/user/info", params={"user_id": user_id}) as resp:
        if resp.status != 200:
            return None
        data = await resp.json(content_type=None)
        role = (data.get("user_info") or {}).get("user_role")
        return str(role) if role else None


async def until_role(http: aiohttp.ClientSession, url: str, user_id: str, role: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await role_of(http, url, user_id) == role:
            return time.monotonic() - started
        await asyncio.sleep(POLL)
    raise TimeoutError(f"{user_id} not {role} within {within}s")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-role-"))
    cluster = peers.find_or_start_cluster(state / "k8s", prefer=os.environ.get("SCIM_TEST_KUBECONFIG"))
    proxy = peers.find_or_start_litellm()
    ns = f"bench-role-{uuid.uuid4().hex[:8]}"
    api = await kube.api_client(cluster.kubeconfig)
    litellm = aiohttp.ClientSession(headers={"Authorization": f"Bearer {proxy.master_key}"})
    operator: OperatorProcess | None = None
    endpoint = None
    try:
        await chart.apply_crds(api)
        await chart.ensure_namespace(api, ns)
        objects = client.CustomObjectsApi(api)
        for name, spec in (
            ("llm-admins", {"selector": {"displayNamePattern": "llm-admins"}, "priority": 10,
                            "user": {"role": "proxy_admin"}}),
            ("everyone", {"default": True, "user": {"role": "internal_user_viewer"}}),
        ):
            await objects.create_namespaced_custom_object(c.API_GROUP, c.VERSION, ns, c.USER_POLICY.plural, {
                "apiVersion": c.API_VERSION, "kind": c.USER_POLICY.kind, "metadata": {"name": name}, "spec": spec})
        operator = OperatorProcess(namespace=ns, kubeconfig=cluster.kubeconfig, litellm_url=proxy.url,
                                   master_key=proxy.master_key, log_path=state / "operator.log",
                                   extra={"drift-interval": "3600", "log-level": "warning"})
        operator.start()
        _, token = await tokens.create_token(api, ns, name="bench")
        endpoint = await asyncio.to_thread(start_endpoint, cluster.kubeconfig, ns, state / "endpoint.log")
        scim = aiohttp.ClientSession(f"{endpoint.url}/scim/v2/", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
        try:
            async def post_user(login: str) -> str:
                async with scim.post("Users", json={"schemas": [USER], "userName": login}) as resp:
                    assert resp.status == 201, await resp.text()
                    return str((await resp.json(content_type=None))["id"])

            limit = asyncio.Semaphore(8)

            async def limited(login: str) -> str:
                async with limit:
                    return await post_user(login)

            others = await asyncio.gather(*(limited(f"other{i}-{ns}@example.com") for i in range(args.others)))
            admins = await asyncio.gather(*(limited(f"admin{i}-{ns}@example.com") for i in range(args.admins)))
            async with scim.post("Groups", json={"schemas": [GROUP], "displayName": "llm-admins",
                                                 "members": [{"value": a} for a in admins]}) as resp:
                assert resp.status == 201, await resp.text()
                group = (await resp.json(content_type=None))["id"]
            for uid in admins:
                await until_role(litellm, proxy.url, uid, "proxy_admin", args.timeout)
            for uid in others[:5]:
                await until_role(litellm, proxy.url, uid, "internal_user_viewer", args.timeout)

            removed: list[float] = []
            added: list[float] = []
            for uid in admins:
                body = {"schemas": [PATCH_OP], "Operations": [
                    {"op": "Remove", "path": f'members[value eq "{uid}"]'}]}
                async with scim.patch(f"Groups/{group}", json=body) as resp:
                    assert resp.status in (200, 204), await resp.text()
                removed.append(await until_role(litellm, proxy.url, uid, "internal_user_viewer", args.timeout))
                body = {"schemas": [PATCH_OP], "Operations": [{"op": "Add", "path": "members",
                                                               "value": [{"value": uid}]}]}
                async with scim.patch(f"Groups/{group}", json=body) as resp:
                    assert resp.status in (200, 204), await resp.text()
                added.append(await until_role(litellm, proxy.url, uid, "proxy_admin", args.timeout))
        finally:
            await scim.close()
    finally:
        await litellm.close()
        if endpoint is not None:
            stop_endpoint(endpoint)
        if operator is not None:
            operator.stop()
        await api.close()
        cluster.stop()
        proxy.stop()

    def summary(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50_s": round(pct(values, 0.5), 3), "p95_s": round(pct(values, 0.95), 3),
                "max_s": round(max(values), 3)}

    return {"admins": args.admins, "others": args.others, "poll_s": POLL,
            "removed_to_default_role": summary(removed), "added_to_admin_role": summary(added)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admins", type=int, default=20)
    parser.add_argument("--others", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", default=str(HERE / "results" / "role_fallback.json"))
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.admins} admins, {args.others} other users; from the SCIM PATCH's answer to /user/info")
    print("| change | n | p50 | p95 | max |")
    print("|---|---|---|---|---|")
    for label, key in (("removed from the admin group -> default role", "removed_to_default_role"),
                       ("added back -> proxy_admin", "added_to_admin_role")):
        row = result[key]
        print(f"| {label} | {row['n']} | {row['p50_s']} s | {row['p95_s']} s | {row['max_s']} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
