"""What follows a ScimTeamPolicy: re-reconciling the groups whose policy in force changed, and the
policy status counts shown by ``kubectl get scimteampolicies``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from scim_contract import GROUP, POLICY, ScimTeamPolicySpec
from scim_operator import groups, policies
from scim_operator.context import Operator
from scim_operator.objects import set_condition
from scim_operator.state import View

log = logging.getLogger(__name__)

# Groups re-reconciled at once after a policy change.
REAPPLY_CONCURRENCY = 4
# How often each policy's status counts are recomputed from the indexes (in memory, written on change).
STATUS_INTERVAL = 3.0


async def reapply(op: Operator, view: View, only: set[str] | None = None) -> None:
    """Re-reconcile every known group whose effective policy (or its generation) changed."""
    stale = []
    for entry in policies.indexed(view.groups):
        name = entry.facts.name
        if only is not None and name not in only:
            continue
        if name not in op.memory.teams.ids:
            continue  # not reconciled yet: its own handler picks the policy up
        if policies.version(view.policy_of(name)) != op.memory.teams.policies.get(name):
            stale.append(name)
    limit = asyncio.Semaphore(REAPPLY_CONCURRENCY)

    async def one(name: str) -> None:
        async with limit:
            body = await op.resources.get(GROUP, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                await groups.reconcile(op, view, body, 0)
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                # The group's drift check retries; the group's status already says why.
                log.warning("group not re-reconciled yet", extra={"fields": {"group": name, "error": str(exc)}})

    await asyncio.gather(*(one(n) for n in stale))


def policy_status(view: View, name: str, body: Any) -> dict[str, Any]:
    gen = body["metadata"].get("generation")
    every = policies.indexed(view.policies)
    selected = [
        e for e in policies.indexed(view.groups) if (p := policies.effective(every, e.facts)) and p.name == name
    ]
    synced = sum(1 for e in selected if e.synced and e.policy == name)
    st = dict(body.get("status") or {})
    try:
        ScimTeamPolicySpec.model_validate(dict(body.get("spec") or {}))
        conds = set_condition(
            st.get("conditions"), "Ready", True, "Valid",
            f"effective policy of {len(selected)} group(s), {synced} synced", gen,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        conds = set_condition(st.get("conditions"), "Ready", False, "Invalid", f"{where}: {first['msg']}", gen)
    return {**st, "observedGeneration": gen, "selectedGroups": len(selected), "syncedGroups": synced,
            "conditions": conds}


def same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(st: dict[str, Any]) -> dict[str, Any]:
        return {**st, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                     for c in st.get("conditions") or []]}

    return strip(a) == strip(b)


async def refresh_status(op: Operator, view: View, name: str, body: Any) -> None:
    """Write the policy's status counts, only when they changed."""
    if not same_status(policy_status(view, name, body), dict(body.get("status") or {})):
        await op.resources.update_status(POLICY, name, lambda st, o: policy_status(view, name, o))
