"""Key Secrets are delivery targets, not records: whoever may write Secrets in a key namespace can
change their annotations, and the operator must not then rename or delete someone else's LiteLLM key.

Each test forges annotations of a delivered Secret so they name a key created directly in LiteLLM
with the master key (someone else's key), triggers what acts on them, and shows that key still works
and is unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from operator_helpers import Admin, Kube, OperatorProcess, eventually
from policy_helpers import key_other_than, put_policy, rotate_keys, secret_data

import scim_contract as c
from scim_common import clock
from scim_operator import key_secrets as ks

pytestmark = [pytest.mark.litellm, pytest.mark.slow]


@pytest.fixture
def key_secret_namespaces(namespace: str) -> list[str]:
    """The chart is installed with key Secrets allowed where these tests' policies deliver them."""
    return [namespace]


async def _foreign_key(admin: Admin, alias: str) -> tuple[str, str]:
    """A key someone made in LiteLLM by hand: (plaintext, hash)."""
    status, data = await admin.post("/key/generate", {"key_alias": alias, "metadata": {"owner": "finance"}})
    assert status == 200, data
    return str(data["key"]), str(data["token"])


async def _key_info(admin: Admin, key_hash: str) -> dict[str, Any]:
    status, data = await admin.get("/key/info", key=key_hash)
    assert status == 200, data
    return dict(data["info"])


async def _assert_untouched(admin: Admin, plaintext: str, key_hash: str, alias: str) -> None:
    assert await admin.models_status(plaintext) == 200, "the foreign key was deleted"
    info = await _key_info(admin, key_hash)
    assert info.get("key_alias") == alias, "the foreign key was renamed"
    assert info.get("metadata") == {"owner": "finance"}


async def _forge(kube: Kube, name: str, annotations: dict[str, str]) -> None:
    await kube.core.patch_namespaced_secret(name, kube.ns, {"metadata": {"annotations": annotations}})


def _retiring(key_hash: str, ago: float = 60.0) -> str:
    return json.dumps([{"hash": key_hash, "deleteAt": clock.rfc3339(time.time() - ago, millis=True)}])


async def _team_key_group(
    kube: Kube, ids: Callable[[str], str], namespace: str, prefix: str, keys: dict[str, Any]
) -> tuple[str, str, str]:
    """A group selected by its own policy with a team key: (group, Secret name, the key)."""
    group = ids("fin")
    await put_policy(kube, prefix, {"selector": {"displayNamePattern": f"{prefix}*"}, "keys": {"perTeam": keys}})
    await kube.create(c.GROUP, group, {"displayName": f"{prefix} {namespace}"})
    name = f"litellm-team-key-{group}"
    return group, name, (await eventually(lambda: secret_data(kube, name), what="team key"))["api-key"]


async def test_forged_hash_and_retiring_list_survive_rotation(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    group, name, old = await _team_key_group(
        kube_rw, ids, namespace, "forged-rot", {"enabled": True, "rotation": {"overlap": "1s"}})
    one_alias, two_alias = f"finance-{group}-1", f"finance-{group}-2"
    one, one_hash = await _foreign_key(admin, one_alias)
    two, two_hash = await _foreign_key(admin, two_alias)

    # The Secret now claims the foreign key is the team key, and another one awaits deletion.
    await _forge(kube_rw, name, {ks.ANN_HASH: one_hash, ks.ANN_RETIRING: _retiring(two_hash)})
    await rotate_keys(kube_rw, group, "forged-1")

    async def acted() -> bool:
        # The rotation went through, or it touched the foreign key (what a trusting operator does).
        data = await secret_data(kube_rw, name) or {}
        return data.get("api-key") != old or (await _key_info(admin, one_hash)).get("key_alias") != one_alias

    await eventually(acted, within=20, what="rotation handled")
    await _assert_untouched(admin, one, one_hash, one_alias)
    new = await eventually(key_other_than(kube_rw, name, old), within=20, what="rotated team key")
    assert await admin.models_status(new) == 200
    # Past the overlap and the retired-key sweep.
    await eventually(lambda: _gone(admin, old), within=15, what="the group's own old key deleted")
    await _assert_untouched(admin, one, one_hash, one_alias)
    await _assert_untouched(admin, two, two_hash, two_alias)


async def _gone(admin: Admin, key: str) -> bool:
    return await admin.models_status(key) == 401


async def test_forged_member_secret_survives_member_removal(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="600")
    ann, ben, group = ids("ann"), ids("ben"), ids("fin")
    await put_policy(kube_rw, "forged-members", {
        "selector": {"displayNamePattern": "forged-mem*"}, "keys": {"perMember": {"enabled": True}}})
    for user in (ann, ben):
        await kube_rw.create(c.USER, user, {"userName": user})
        await eventually(lambda u=user: admin.user(u), what=f"user {user}")  # type: ignore[misc]
    await kube_rw.create(c.GROUP, group, {"displayName": f"forged-mem {namespace}"})
    await kube_rw.set_members(group, [ann, ben])
    ann_name, ben_name = f"litellm-key-{group}-{ann}", f"litellm-key-{group}-{ben}"
    await eventually(lambda: secret_data(kube_rw, ann_name), what="ann's key")
    ben_key = (await eventually(lambda: secret_data(kube_rw, ben_name), what="ben's key"))["api-key"]
    alias = f"finance-{group}"
    foreign, foreign_hash = await _foreign_key(admin, alias)

    # Ann's Secret is re-pointed at the foreign key, with a retired key too, then Ann leaves.
    await _forge(kube_rw, ann_name, {ks.ANN_HASH: foreign_hash, ks.ANN_RETIRING: _retiring(foreign_hash)})
    # Ben's Secret claims to be Ann's (the member reference) and names the foreign key.
    await _forge(kube_rw, ben_name, {ks.ANN_USER: ann, ks.ANN_HASH: foreign_hash})
    await kube_rw.set_members(group, [ben])
    await eventually(lambda: _no_secret(kube_rw, ann_name), within=20, what="ann's Secret removed")
    await _assert_untouched(admin, foreign, foreign_hash, alias)
    # Ben stays: his Secret is not read as Ann's, and his own key is not revoked with hers.
    assert await admin.models_status(ben_key) == 200


async def _no_secret(kube: Kube, name: str) -> bool:
    return await secret_data(kube, name) is None


async def test_forged_alias_survives_drift_repair_and_group_deletion(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, ids: Callable[[str], str],
    namespace: str,
) -> None:
    start_operator(drift_interval="1")
    group, name, old = await _team_key_group(kube_rw, ids, namespace, "forged-drift", {"enabled": True, "maxBudget": 5})
    alias = f"finance-{group}"
    foreign, foreign_hash = await _foreign_key(admin, alias)

    # Hash and alias name the foreign key (whose budget differs from the policy's): a drift check that
    # believed the Secret would "repair" it by deleting it.
    await _forge(kube_rw, name, {ks.ANN_HASH: foreign_hash, ks.ANN_ALIAS: alias})
    await eventually(key_other_than(kube_rw, name, old), within=20, what="team key replaced after the forgery")
    await _assert_untouched(admin, foreign, foreign_hash, alias)

    # The group goes: its keys are revoked, the one its Secret names is not its own.
    await _forge(kube_rw, name, {ks.ANN_HASH: foreign_hash, ks.ANN_ALIAS: alias})
    await kube_rw.delete(c.GROUP, group)
    await eventually(lambda: _group_gone(kube_rw, group), within=20, what="group deleted")
    await _assert_untouched(admin, foreign, foreign_hash, alias)


async def _group_gone(kube: Kube, group: str) -> bool:
    return await kube.get(c.GROUP, group) is None
