"""Virtual keys of a group, as its ScimTeamPolicy asks: issue, deliver as Secrets, rotate, revoke.

Level-based like the rest of the operator: ``sync_group`` compares the keys the policy wants (one per
active member and/or one for the team, per target namespace) with the key Secrets that exist, and
fixes the difference. The key plaintext goes from LiteLLM's /key/generate answer straight into the
Secret body and nowhere else: errors carry HTTP statuses and names, never request bodies.

Order of operations is chosen so a crash at any point leaves nothing usable behind: a key whose
Secret could not be written is deleted again; a key is deleted in LiteLLM before its Secret (which
holds its hash) is removed; a rotated key's pending deletion is written into the Secret together with
the new key, so a restarted operator still deletes it when the overlap ends.

A Secret is a delivery target, not a record to act on: anyone who may write Secrets in a key
namespace can change its annotations. Every hash read from one is confirmed in LiteLLM (``_owned``:
the key exists under this key's alias, carries this group's ownership tag and, for a member key,
belongs to that member) before it is renamed or deleted; anything else is left alone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from scim_contract import GROUP, KeySpec
from scim_operator import key_secrets as ks
from scim_operator.context import Operator
from scim_operator.litellm_api import LiteLLMError
from scim_operator.objects import owner_value, set_condition
from scim_operator.policies import Policy, seconds
from scim_operator.secrets_api import KeyDeliveryError
from scim_operator.state import Memory, View

log = logging.getLogger(__name__)


Events = list[tuple[str, str]]


def _specs(policy: Policy | None) -> tuple[KeySpec | None, KeySpec | None]:
    keys = policy.spec.keys if policy is not None else None
    member = keys.perMember if keys is not None and keys.perMember and keys.perMember.enabled else None
    team = keys.perTeam if keys is not None and keys.perTeam and keys.perTeam.enabled else None
    return member, team


def _namespaces(op: Operator, spec: KeySpec) -> list[str]:
    return sorted(set(spec.secretNamespaces or [op.namespace]))


def key_namespaces(op: Operator, group: str, policy: Policy | None, recorded: Iterable[str] = ()) -> set[str]:
    """Where the group's key Secrets can be: where the policy delivers them, where the group's status
    says they were delivered, and where this process delivered them. Nowhere else: the chart grants
    Secret access only in the namespaces keys are delivered to, not in the operator's own."""
    member, team = _specs(policy)
    wanted = {ns for spec in (member, team) if spec is not None for ns in _namespaces(op, spec)}
    return wanted | set(recorded) | {ns for ns, _ in op.memory.keys.delivered.get(group) or ()}


def recorded_namespaces(body: Any) -> list[str]:
    return list(((body.get("status") or {}).get("keys") or {}).get("namespaces") or [])


def desired_keys(
    op: Operator, view: View, group: str, policy: Policy | None, only: set[str] | None
) -> dict[ks.KeyRef, KeySpec]:
    """Every key the policy wants for the group (restricted to the users in ``only`` when given)."""
    member, team = _specs(policy)
    wanted: dict[ks.KeyRef, KeySpec] = {}
    if member is not None:
        users, _ = view.group_member_ids(group)
        for user in sorted(users if only is None else users & only):
            if view.user_active(user):
                for ns in _namespaces(op, member):
                    wanted[ks.KeyRef(op.namespace, group, user, ns)] = member
    if team is not None and only is None:
        for ns in _namespaces(op, team):
            wanted[ks.KeyRef(op.namespace, group, None, ns)] = team
    return wanted


def status_of(memory: Memory, group: str) -> dict[str, Any]:
    delivered = memory.keys.delivered.get(group) or set()
    return {"issued": len(delivered), "namespaces": sorted({ns for ns, _ in delivered})}


def keys_condition(
    memory: Memory, group: str, conditions: list[dict[str, Any]] | None, generation: int | None
) -> list[dict[str, Any]]:
    """``KeysDelivered`` on groups that have or had keys: False with the reason while a key cannot
    be delivered (the Events name each Secret)."""
    failure = memory.keys.failures.get(group)
    if failure is not None:
        reason, message = failure
        return set_condition(conditions, "KeysDelivered", False, reason, message, generation)
    if memory.keys.delivered.get(group) or any(c.get("type") == "KeysDelivered" for c in conditions or []):
        issued = len(memory.keys.delivered.get(group) or ())
        return set_condition(
            conditions, "KeysDelivered", True, "Delivered", f"{issued} key Secret(s) delivered", generation
        )
    return list(conditions or [])


def wants_keys(policy: Policy | None) -> bool:
    member, team = _specs(policy)
    return member is not None or team is not None


def wants_member_keys(policy: Policy | None) -> bool:
    return _specs(policy)[0] is not None


# ---- LiteLLM keys -------------------------------------------------------------------------------
async def keys_with_alias(op: Operator, alias: str) -> list[dict[str, Any]]:
    return await op.litellm.list_keys(key_alias=alias)


def _tag(op: Operator, ref: ks.KeyRef) -> str:
    return owner_value(ref.source_namespace, ref.group)


def _retiring_alias(ref: ks.KeyRef, key_hash: str) -> str:
    return f"{ks.key_alias(ref)}:retiring:{key_hash[:12]}"


async def _owned(op: Operator, ref: ks.KeyRef, hashes: Iterable[str | None], *, current: bool = False) -> list[str]:
    """Of these hashes (read from a Secret, which tenants may write), the ones LiteLLM itself says
    are this key's: found under its alias (or the alias it retires under) with this group's
    ownership tag, and for a member key owned by that member. Only these may be renamed or deleted.
    ``current``: also whatever key holds this key's alias now, whichever hash the Secret names (a
    revocation must not depend on the Secret either)."""
    wanted = {h for h in hashes if h}
    if not wanted and not current:
        return []
    found: set[str] = set()
    main = ks.key_alias(ref)
    for alias in sorted({main} | {_retiring_alias(ref, h) for h in wanted}):
        for key in await keys_with_alias(op, alias):
            meta = key.get("metadata")
            if ((key.get("token") in wanted or (current and alias == main)) and isinstance(meta, dict)
                    and meta.get(op.settings.owner_tag) == _tag(op, ref)
                    and (ref.user is None or key.get("user_id") == op.memory.users.id_of(ref.user))):
                found.add(str(key["token"]))
    return sorted(found)


async def _clear_alias(op: Operator, ref: ks.KeyRef, keep: str | None) -> None:
    """Keys holding our alias that no Secret names (a crash between generate and write left them):
    nobody has their plaintext, so they are deleted. A key with the alias and no tag of ours is
    never touched."""
    alias = ks.key_alias(ref)
    stale = []
    for key in await keys_with_alias(op, alias):
        if key.get("token") == keep:
            continue
        meta = key.get("metadata")
        if not isinstance(meta, dict) or meta.get(op.settings.owner_tag) != _tag(op, ref):
            raise KeyDeliveryError(f"LiteLLM key alias {alias} is held by a key this operator does not manage")
        stale.append(str(key["token"]))
    await op.litellm.key_delete(stale)


async def _generate(op: Operator, ref: ks.KeyRef, spec: KeySpec, team_id: str) -> tuple[str, str]:
    body: dict[str, Any] = {
        "key_alias": ks.key_alias(ref),
        "team_id": team_id,
        "metadata": {op.settings.owner_tag: _tag(op, ref), ks.ANN_GROUP: f"{ref.source_namespace}/{ref.group}"},
    }
    if ref.user:
        body["user_id"] = op.memory.users.id_of(ref.user)
    if spec.models is not None:
        body["models"] = spec.models
    if spec.maxBudget is not None:
        body["max_budget"] = spec.maxBudget
    if spec.duration is not None:
        body["duration"] = spec.duration
    return await op.litellm.key_generate(body)


def _owner(op: Operator, ref: ks.KeyRef, group_obj: dict[str, Any]) -> dict[str, str] | None:
    if ref.namespace != op.namespace:
        return None  # owner references cannot cross namespaces; revoke_group removes these
    return {
        "apiVersion": GROUP.api_version,
        "kind": GROUP.kind,
        "name": group_obj["metadata"]["name"],
        "uid": group_obj["metadata"]["uid"],
    }


async def _deliver(
    op: Operator,
    ref: ks.KeyRef,
    spec: KeySpec,
    team_id: str,
    group_obj: dict[str, Any],
    request: str,
    retiring: list[ks.Retiring],
) -> str:
    """Generate a key and write it into its Secret; the key is deleted again if the write fails."""
    plaintext, key_hash = await _generate(op, ref, spec, team_id)
    body = ks.secret_body(
        ref,
        plaintext=plaintext,
        base_url=op.litellm.url,
        key_hash=key_hash,
        issued_at=time.time(),
        rotation_request=request,
        retiring_keys=retiring,
        owner=_owner(op, ref, group_obj),
    )
    try:
        await op.secrets.write(body)
    except KeyDeliveryError:
        await op.litellm.key_delete([key_hash])
        raise
    return key_hash


async def _issue(
    op: Operator, ref: ks.KeyRef, spec: KeySpec, team_id: str, group_obj: dict[str, Any], request: str,
    previous: ks.Delivered | None,
) -> None:
    if previous is not None and previous.key_hash:
        # Replaced (missing or changed in LiteLLM): deleted only if LiteLLM confirms it is this key.
        await op.litellm.key_delete(await _owned(op, ref, [previous.key_hash]))
    await _clear_alias(op, ref, keep=None)
    await _deliver(op, ref, spec, team_id, group_obj, request, previous.retiring if previous else [])


async def _rotate(
    op: Operator, d: ks.Delivered, spec: KeySpec, team_id: str, group_obj: dict[str, Any], request: str
) -> float:
    """Replace the key in its Secret; the old one stays valid for the overlap. Returns the deadline."""
    assert d.key_hash is not None
    overlap = seconds(spec.rotation.overlap if spec.rotation else None) or 0.0
    alias = ks.key_alias(d.ref)
    if not await _owned(op, d.ref, [d.key_hash]):
        # Not this key in LiteLLM (gone, or the Secret names someone else's): nothing to overlap with.
        await _issue(op, d.ref, spec, team_id, group_obj, request, d)
        return time.time()
    # Free the alias (LiteLLM refuses duplicates); the old key keeps working under a retiring alias.
    if not await op.litellm.key_rename(d.key_hash, _retiring_alias(d.ref, d.key_hash)):
        # The old key is gone already: nothing to overlap with, just issue a new one.
        await _issue(op, d.ref, spec, team_id, group_obj, request, d)
        return time.time()
    deadline = time.time() + overlap
    retiring = [*d.retiring, ks.Retiring(d.key_hash, deadline)]
    try:
        await _deliver(op, d.ref, spec, team_id, group_obj, request, retiring)
    except (KeyDeliveryError, LiteLLMError):
        await op.litellm.key_rename(d.key_hash, alias)
        raise
    return deadline


async def _revoke(op: Operator, d: ks.Delivered) -> None:
    """Delete the key (and any retiring ones) in LiteLLM first, then the Secret that names them."""
    hashes = [d.key_hash, *(r.key_hash for r in d.retiring)]
    await op.litellm.key_delete(await _owned(op, d.ref, hashes, current=True))
    await op.secrets.remove(d.ref.namespace, d.name)


def _rotation_due(d: ks.Delivered, spec: KeySpec, request: str, now: float) -> bool:
    if request and request != d.rotation_request:
        return True
    every = seconds(spec.rotation.every if spec.rotation else None)
    return every is not None and now >= d.issued_at + every


def _describe(ref: ks.KeyRef) -> str:
    who = f"member {ref.user}" if ref.user else "team"
    return f"{who} key in Secret {ref.namespace}/{ks.secret_name(ref)}"


# ---- the group's keys ---------------------------------------------------------------------------
async def sync_group(
    op: Operator,
    view: View,
    group: str,
    team_id: str,
    policy: Policy | None,
    only: set[str] | None = None,
    reissue: bool = False,
) -> Events:
    """Make the group's key Secrets match its policy; ``only``: just these members' keys;
    ``reissue``: every key is replaced (the group moved to another team, its old keys are gone).

    Must run under the group's lock. Returns the Events to post on the group."""
    obj = await op.resources.get(GROUP, group)
    if obj is None:
        return []
    request = str((obj["metadata"].get("annotations") or {}).get(ks.ANNOTATION_ROTATE) or "")
    recorded = recorded_namespaces(obj)
    wanted = desired_keys(op, view, group, policy, only)
    if not wanted and not recorded and not op.memory.keys.delivered.get(group):
        return []  # no keys wanted, none given out: no Secret listing for groups without key policies
    namespaces = key_namespaces(op, group, policy, recorded) | {r.namespace for r in wanted}
    delivered = op.memory.keys.delivered.setdefault(group, set())
    single = next(iter(only)) if only is not None and len(only) == 1 else None
    failures: list[KeyDeliveryError] = []
    events: Events = []
    existing: list[ks.Delivered] = []
    unreadable: set[str] = set()
    for ns in sorted(namespaces):
        try:
            existing += await op.secrets.delivered([ns], group, single)
        except KeyDeliveryError as exc:
            # Nothing is known about this namespace: its keys are neither issued nor revoked now.
            unreadable.add(ns)
            failures.append(exc)
            events.append((exc.reason, str(exc)))
    if only is not None:
        existing = [d for d in existing if d.ref.user in only]
    else:
        delivered.difference_update({item for item in delivered if item[0] not in unreadable})
    repair = op.memory.keys.repairs.pop(group, set())
    by_ref = {d.ref: d for d in existing}
    now = time.time()
    for gone in existing:
        if gone.ref not in wanted:
            await _revoke(op, gone)
            delivered.discard((gone.ref.namespace, gone.name))
            events.append(("KeyRevoked", f"revoked {_describe(gone.ref)}: deleted in LiteLLM, Secret removed"))
    for ref, spec in sorted(wanted.items(), key=lambda item: (item[0].namespace, item[0].user or "")):
        if ref.namespace in unreadable:
            continue
        d = by_ref.get(ref)
        try:
            if d is None or d.key_hash is None or d.name in repair or reissue:
                await _issue(op, ref, spec, team_id, obj, request, d)
                events.append(("KeyIssued" if d is None else "KeyReplaced", f"issued {_describe(ref)}"))
            elif _rotation_due(d, spec, request, now):
                deadline = await _rotate(op, d, spec, team_id, obj, request)
                _delete_later(op, group, deadline)
                events.append(("KeyRotated", f"rotated {_describe(ref)}; previous key valid for "
                                             f"{max(0.0, deadline - now):.0f}s more"))
        except KeyDeliveryError as exc:
            log.warning("key not delivered", extra={"fields": {"group": group, "error": str(exc)}})
            events.append((exc.reason, f"{_describe(ref)} not delivered: {exc}"))
            failures.append(exc)
            continue
        delivered.add((ref.namespace, ks.secret_name(ref)))
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        op.memory.keys.failures[group] = (failures[0].reason, f"{failures[0]}{more}")
    elif only is None:
        # Only a full sync knows that every key of the group is delivered.
        op.memory.keys.failures.pop(group, None)
    return events


async def sweep(op: Operator, group: str, namespaces: Iterable[str]) -> float | None:
    """Delete retired keys whose overlap ended; returns the next deadline (epoch) or None."""
    following: float | None = None
    now = time.time()
    for d in await op.secrets.delivered(namespaces, group):
        due = [r for r in d.retiring if r.delete_at <= now]
        if due:
            # Due entries leave the Secret either way; only the ones LiteLLM confirms are deleted.
            await op.litellm.key_delete(await _owned(op, d.ref, [r.key_hash for r in due]))
            await op.secrets.set_retiring(d, [r for r in d.retiring if r.delete_at > now])
        for r in d.retiring:
            if r.delete_at > now:
                following = r.delete_at if following is None else min(following, r.delete_at)
    return following


def next_rotation(existing: Iterable[ks.Delivered], policy: Policy | None) -> float | None:
    """Epoch at which the first of these keys is due for scheduled rotation, or None."""
    member, team = _specs(policy)
    spec_of = {ks.MEMBER: member, ks.TEAM: team}
    due = []
    for d in existing:
        spec = spec_of.get(d.ref.kind)
        every = seconds(spec.rotation.every if spec is not None and spec.rotation else None)
        if every is not None:
            due.append(d.issued_at + every)
    return min(due, default=None)


def _delete_later(op: Operator, group: str, deadline: float) -> None:
    """Delete the retired key right when its overlap ends (the group's timed key check is the restart-safe backstop)."""

    async def later() -> None:
        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.2)
        async with op.memory.lock("group", group):
            try:
                await sweep(op, group, {ns for ns, _ in op.memory.keys.delivered.get(group) or ()})
            except (LiteLLMError, KeyDeliveryError) as exc:
                log.warning("retired key not deleted yet", extra={"fields": {"group": group, "error": str(exc)}})

    task = asyncio.create_task(later())
    op.memory.keys.background.add(task)
    task.add_done_callback(op.memory.keys.background.discard)


async def revoke_group(op: Operator, group: str, body: Any, policy: Policy | None) -> list[KeyDeliveryError]:
    """The group is gone: every key it gave out is deleted in LiteLLM first, found there by its team
    and this group's ownership tag (so revocation never waits for a Secret that cannot be read), then
    its Secrets are removed. Returns what could not be removed: Secrets left behind hold dead keys."""
    team_id = ((body.get("status") or {}).get("litellm") or {}).get("teamId")
    if team_id:
        tag = owner_value(op.namespace, group)
        owned = [k for k in await op.litellm.list_keys(team_id=str(team_id), urgent=True)
                 if isinstance(k.get("metadata"), dict) and k["metadata"].get(op.settings.owner_tag) == tag]
        await op.litellm.key_delete([str(k["token"]) for k in owned if k.get("token")])
    left: list[KeyDeliveryError] = []
    for ns in sorted(key_namespaces(op, group, policy, recorded_namespaces(body))):
        try:
            for d in await op.secrets.delivered([ns], group):
                await _revoke(op, d)
        except KeyDeliveryError as exc:
            left.append(exc)
    op.memory.keys.delivered.pop(group, None)
    return left


async def drift_of(op: Operator, group: str, policy: Policy | None, *, repair: bool) -> list[str]:
    """Keys deleted or changed in LiteLLM behind the operator's back. With ``repair`` they are marked
    so the next sync of the group writes a new key into their Secret."""
    member, team = _specs(policy)
    spec_of = {k: s for k, s in ((ks.MEMBER, member), (ks.TEAM, team)) if s is not None}
    namespaces = key_namespaces(op, group, policy)
    findings: list[str] = []
    broken: set[str] = set()
    try:
        existing = await op.secrets.delivered(namespaces, group)
    except KeyDeliveryError as exc:
        return [str(exc)]
    for d in existing:
        spec = spec_of.get(d.ref.kind)
        if spec is None or d.key_hash is None:
            continue
        # The alias the key must have, not the one the Secret claims.
        found = [k for k in await keys_with_alias(op, ks.key_alias(d.ref)) if k.get("token") == d.key_hash]
        if not found:
            findings.append(f"{_describe(d.ref)} was deleted or renamed in LiteLLM")
            broken.add(d.name)
            continue
        key = found[0]
        if spec.models is not None and sorted(key.get("models") or []) != sorted(spec.models):
            findings.append(f"{_describe(d.ref)}: models are {key.get('models')!r}, policy says {spec.models!r}")
            broken.add(d.name)
        if spec.maxBudget is not None and key.get("max_budget") != spec.maxBudget:
            findings.append(
                f"{_describe(d.ref)}: max_budget is {key.get('max_budget')!r}, policy says {spec.maxBudget!r}"
            )
            broken.add(d.name)
    if broken and repair:
        op.memory.keys.repairs.setdefault(group, set()).update(broken)
    return findings
