"""A group's keys outside its own reconcile: a rotation request, the timed check of a group's keys
(scheduled rotation, end of overlaps; ``key_tick``, run from the operator's key timetable) and a
user's personal keys following the user, each under the group's lock, with the count recorded in
the group's status."""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from scim_contract import GROUP
from scim_operator import keys
from scim_operator.context import Operator
from scim_operator.litellm_api import LiteLLMError
from scim_operator.resources import emit, ref
from scim_operator.secrets_api import KeyDeliveryError
from scim_operator.state import View

log = logging.getLogger(__name__)


async def sync_keys(op: Operator, view: View, group: str, only: set[str] | None) -> None:
    """Sync one group's keys under its lock, then record the count in its status and post Events."""
    team_id = op.memory.teams.ids.get(group)
    if team_id is None:
        return
    policy = view.policy_of(group)
    async with op.memory.lock("group", group):
        if op.memory.teams.ids.get(group) != team_id or group in op.memory.teams.deleting:
            return  # deleted (or moved to another team) while this waited: issue nothing
        events = await keys.sync_group(op, view, group, team_id, policy, only=only)
        target = await op.resources.update_status(
            GROUP,
            group,
            lambda st, o: {
                **st,
                "keys": keys.status_of(op.memory, group),
                "conditions": keys.keys_condition(
                    op.memory, group, st.get("conditions"), o["metadata"].get("generation")
                ),
            },
        )
    if target is not None:
        gref = ref(GROUP, op.namespace, group, target["metadata"].get("uid"))
        for reason, message in events:
            emit(gref, reason, message)


async def user_keys(op: Operator, view: View, user: str) -> None:
    """A ScimUser changed (activated, deactivated, deleted): its personal keys follow, in every group."""
    for group in view.groups_of(user):
        if keys.wants_member_keys(view.policy_of(group)) or op.memory.keys.delivered.get(group):
            try:
                await sync_keys(op, view, group, only={user})
            except (LiteLLMError, KeyDeliveryError) as exc:
                # The group's timed key check and drift check converge it later.
                log.warning("member keys not updated yet", extra={"fields": {"group": group, "error": str(exc)}})


async def key_tick(op: Operator, view: View, group: str, body: Any) -> float | None:
    """Delete retired keys whose overlap ended and rotate keys that are due. Returns the epoch of the
    next thing to do, or None."""
    policy = view.policy_of(group)
    recorded = keys.recorded_namespaces(body)
    if not keys.wants_keys(policy) and not recorded and not op.memory.keys.delivered.get(group):
        return None
    namespaces = keys.key_namespaces(op, group, policy, recorded)
    async with op.memory.lock("group", group):
        following = await keys.sweep(op, group, namespaces)
        existing = await op.secrets.delivered(namespaces, group)
    rotation = keys.next_rotation(existing, policy)
    if rotation is not None and rotation <= time.time() and group in op.memory.teams.ids:
        await sync_keys(op, view, group, None)
        return time.time() + 1.0
    times = [t for t in (following, rotation) if t is not None]
    return min(times, default=None)


async def rotate(op: Operator, view: View, group: str, retry: int) -> None:
    """A rotation was requested on the group (its annotation): new keys now, retried with backoff."""
    try:
        await sync_keys(op, view, group, None)
    except (LiteLLMError, KeyDeliveryError) as exc:
        raise kopf.TemporaryError(f"keys not rotated yet: {exc}", delay=min(30, 2 ** min(retry, 4))) from None
