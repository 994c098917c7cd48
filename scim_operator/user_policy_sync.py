"""What follows a ScimUserPolicy: re-reconciling the users whose policy in force changed (because a
policy, a group's membership, labels or name changed), and the policy's status (the users it is
in force for, and ties it won or lost on the name alone).

A user's own changes (its attributes) go through the user's handler, which asks for the policy in
force itself; this module covers what changes a user's policy without touching the user."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from scim_contract import USER, USER_POLICY, ScimUserPolicySpec, ScimUserSpec
from scim_operator import metrics, policies, user_policies, users
from scim_operator.context import NotOwned, Operator, failure_reason
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import failed_status, set_condition
from scim_operator.policy_sync import same_status
from scim_operator.resources import emit
from scim_operator.state import View

log = logging.getLogger(__name__)

# Changes arriving within this window (a provisioning writes many shards) are handled in one pass.
SWEEP_WINDOW = 0.2
# A pass in which LiteLLM refused or was away is repeated after this long.
RETRY_AFTER = 5.0
# Users re-reconciled at once.
REAPPLY_CONCURRENCY = 4
# How often each policy's status is recomputed (in memory, written on change), and how long one
# computation over every user serves all policies.
STATUS_INTERVAL = 3.0
SUMMARY_MAX_AGE = 1.0


def group_changed(op: Operator, view: View, event: Any) -> None:
    """A ScimGroup event: a pass only when what user selectors see of the group changed (its
    name, externalId, labels, existence), not for the operator's own status writes."""
    obj = event.get("object") or {}
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    facts = None if gone else policies.group_entry(
        name, dict(obj.get("spec") or {}), dict(meta.get("labels") or {}), {}).facts
    seen = op.memory.users.group_facts
    if seen.get(name) == facts:
        return
    if facts is None:
        seen.pop(name, None)
    else:
        seen[name] = facts
    if event.get("type") is not None:  # the initial listing only records what is there
        sweep_soon(op, view)


def sweep_soon(op: Operator, view: View) -> None:
    """Schedule a pass over the users whose policy in force may have changed; bursts coalesce."""
    state = op.memory.users
    if state.sweep_task is not None and not state.sweep_task.done():
        state.sweep_again = True
        return
    state.sweep_task = asyncio.create_task(_sweep(op, view))


async def _sweep(op: Operator, view: View) -> None:
    state = op.memory.users
    while True:
        state.sweep_again = False
        await asyncio.sleep(SWEEP_WINDOW)
        try:
            complete = await reapply(op, view)
        except Exception as exc:  # the next change or the retry below tries again; never lose the task silently
            log.warning("user policies not re-applied yet", extra={"fields": {"error": str(exc)}})
            complete = False
        if not complete:
            await asyncio.sleep(RETRY_AFTER)
            state.sweep_again = True
        if not state.sweep_again:
            return


def stale_users(op: Operator, view: View) -> list[str]:
    """Users reconciled by this process whose policy in force (or its generation) changed since."""
    every = policies.indexed(view.user_policies)
    recorded = op.memory.users.policies
    if not every and not any(v != user_policies.version(None) for v in recorded.values()):
        return []  # no policies now and none applied before: nothing can have changed
    stale = []
    for name in list(op.memory.users.ready):
        if name in op.memory.users.deleting:
            continue
        current = user_policies.effective(every, view.user_facts(name)) if every else None
        if recorded.get(name) != user_policies.version(current):
            stale.append(name)
    return stale


async def reapply(op: Operator, view: View) -> bool:
    """Re-reconcile the stale users' LiteLLM settings; False when some could not be done yet."""
    limit = asyncio.Semaphore(REAPPLY_CONCURRENCY)

    async def one(name: str) -> bool:
        async with limit, op.memory.lock("user", name):
            body = await op.resources.get(USER, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return True
            try:
                spec = ScimUserSpec.model_validate(dict(body.get("spec") or {}))
            except ValidationError:
                return True  # the user's own handler reports an invalid spec
            try:
                out = await users.apply_user(op, view, name, spec, dict(body.get("status") or {}))
            except NotOwned:
                return True  # not ours to change: the user's handler and drift check report it
            except LiteLLMError as exc:
                # On the user, as its handler would; only a passing failure is worth a quick retry
                # (a refusal is retried by the next change or the user's drift check).
                log.warning("user policy not applied yet", extra={"fields": {"user": name, "error": str(exc)}})
                metrics.FAILURES.labels("user", failure_reason(exc)).inc()
                await op.resources.update_status(USER, name, failed_status(failure_reason(exc), str(exc)))
                return not exc.transient
            await op.resources.update_status(USER, name, users.ok_status(out, view, name))
        for reason, message in out.events:
            emit(body, reason, message)
        return True

    results = await asyncio.gather(*(one(n) for n in stale_users(op, view)))
    return all(results)


# ---- the policies' status --------------------------------------------------------------------
@dataclass
class Summary:
    """Over every user: how many each policy is in force for, and its ties (policy -> rival ->
    number of users they tied on)."""

    made: float
    selected: Counter[str] = field(default_factory=Counter)
    ties: dict[str, Counter[str]] = field(default_factory=dict)


def summary(view: View) -> Summary:
    cached = view.memory.users.policy_summary
    if isinstance(cached, Summary) and time.monotonic() - cached.made < SUMMARY_MAX_AGE:
        return cached
    every = policies.indexed(view.user_policies)
    result = Summary(made=time.monotonic())
    for name in list(view.users):
        if name in view.memory.users.deleting:
            continue
        facts = view.user_facts(name)
        winner = user_policies.effective(every, facts)
        if winner is not None:
            result.selected[winner.name] += 1
        tie = user_policies.tied(every, facts)
        for policy in tie:
            rivals = result.ties.setdefault(policy.name, Counter())
            rivals.update(p.name for p in tie if p.name != policy.name)
    view.memory.users.policy_summary = result
    return result


def _conflict(name: str, rivals: Counter[str], priority: int) -> tuple[bool, str, str]:
    if not rivals:
        return False, "NoConflict", "no other policy with the same priority selects its users with other settings"
    parts = []
    for rival, count in sorted(rivals.items()):
        winner = min(name, rival)
        parts.append(f"ties with {rival} (priority {priority}, other settings) for {count} user(s): "
                     f"{winner} applies, its name sorts first")
    return True, "TiedPriority", "; ".join(parts)


def policy_status(view: View, name: str, body: Any) -> dict[str, Any]:
    gen = body["metadata"].get("generation")
    st = dict(body.get("status") or {})
    try:
        spec = ScimUserPolicySpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        conds = set_condition(st.get("conditions"), "Ready", False, "Invalid",
                              f"{where}: {first['msg']}; the policy applies to nobody", gen)
        conds = [c for c in conds if c.get("type") != "Conflict"]
        return {**st, "observedGeneration": gen, "selectedUsers": 0, "conditions": conds}
    found = summary(view)
    selected = found.selected.get(name, 0)
    conds = set_condition(st.get("conditions"), "Ready", True, "Valid", f"in force for {selected} user(s)", gen)
    conflict, reason, message = _conflict(name, found.ties.get(name, Counter()), spec.priority)
    conds = set_condition(conds, "Conflict", conflict, reason, message, gen)
    return {**st, "observedGeneration": gen, "selectedUsers": selected, "conditions": conds}


async def refresh_status(op: Operator, view: View, name: str, body: Any) -> None:
    """Write the policy's status, only when it changed."""
    if not same_status(policy_status(view, name, body), dict(body.get("status") or {})):
        await op.resources.update_status(USER_POLICY, name, lambda st, o: policy_status(view, name, o))
