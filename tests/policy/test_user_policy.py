"""ScimUserPolicy -> LiteLLM user role, budget, models and limits, end to end: SCIM requests into a
real endpoint process, the operator under the chart's RBAC, the real API server and LiteLLM proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from operator_helpers import Admin, Kube, OperatorProcess, eventually, metric_sum
from policy_helpers import put_policy
from test_restart import calls

import scim_contract as c

pytestmark = [pytest.mark.litellm, pytest.mark.slow]

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def put_user_policy(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    await put_policy(kube, name, spec, kind=c.USER_POLICY)


async def _create_user(call: Callable[..., Any], user_name: str, **extra: Any) -> str:
    status, body = await call("POST", "/Users", {"schemas": [USER], "userName": user_name, **extra})
    assert status == 201, body
    return str(body["id"])


def _user_has(admin: Admin, user_id: str, **want: Any) -> Callable[[], Any]:
    async def probe() -> dict[str, Any] | None:
        info = await admin.user(user_id)
        return info if info is not None and all(info.get(k) == v for k, v in want.items()) else None

    return probe


def _status_is(kube: Kube, name: str, **want: Any) -> Callable[[], Any]:
    async def probe() -> dict[str, Any] | None:
        st = ((await kube.get(c.USER, name)) or {}).get("status") or {}
        return st if all(st.get(k) == v for k, v in want.items()) else None

    return probe


async def _wide_row(kube: Kube, name: str) -> dict[str, Any]:
    """The ScimUser's row as `kubectl get scimusers -o wide` prints it: the API server's Table,
    built from the CRD's printer columns."""
    table = await kube.objects.api_client.call_api(
        f"/apis/{c.API_GROUP}/{c.VERSION}/namespaces/{kube.ns}/{c.USER.plural}/{name}", "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        response_types_map={200: "object"}, auth_settings=["BearerToken"], _return_http_data_only=True)
    columns = [col["name"] for col in table["columnDefinitions"]]
    return dict(zip(columns, table["rows"][0]["cells"], strict=True))


async def test_admin_group_role_falls_back_to_the_default_when_the_member_leaves(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess],
    kube_rw: Kube, admin: Admin, namespace: str,
) -> None:
    start_operator(drift_interval="600")
    await put_user_policy(kube_rw, "llm-admins", {
        "selector": {"displayNamePattern": f"llm-admins-{namespace}"}, "priority": 10,
        "user": {"role": "proxy_admin", "maxBudget": 1000},
    })
    await put_user_policy(kube_rw, "everyone", {
        "default": True,
        "user": {"role": "internal_user_viewer", "maxBudget": 5, "budgetDuration": "30d", "models": ["gpt-4o"],
                 "tpmLimit": 100, "rpmLimit": 10},
    })
    alice = await _create_user(scim, f"alice-{namespace}@example.com")
    status, group = await scim("POST", "/Groups", {
        "schemas": [GROUP], "displayName": f"llm-admins-{namespace}", "members": [{"value": alice}]})
    assert status == 201, group

    info = await eventually(_user_has(admin, alice, user_role="proxy_admin", max_budget=1000.0),
                            what="member of the admin group is proxy_admin")
    assert info["user_email"] == f"alice-{namespace}@example.com"
    await eventually(_status_is(kube_rw, alice, policy="llm-admins", role="proxy_admin"),
                     what="user status names the role and its policy")
    row = await _wide_row(kube_rw, alice)
    assert (row["Role"], row["Policy"]) == ("proxy_admin", "llm-admins"), row

    # A user in no selected group gets the default policy's settings, all of them.
    bob = await _create_user(scim, f"bob-{namespace}@example.com")
    info = await eventually(_user_has(admin, bob, user_role="internal_user_viewer"), what="default role")
    assert (info["max_budget"], info["budget_duration"], info["models"], info["tpm_limit"], info["rpm_limit"]) == (
        5.0, "30d", ["gpt-4o"], 100, 10)
    await eventually(_status_is(kube_rw, bob, policy="everyone", role="internal_user_viewer"),
                     what="default policy named in the user's status")

    # A label an admin puts on bob's group (not a SCIM write) selects him for a label policy.
    await put_user_policy(kube_rw, "gold", {"selector": {"labelSelector": {"matchLabels": {"tier": "gold"}}},
                                            "priority": 20, "user": {"role": "proxy_admin_viewer"}})
    status, ml = await scim("POST", "/Groups", {
        "schemas": [GROUP], "displayName": f"ml-{namespace}", "members": [{"value": bob}]})
    assert status == 201, ml
    await kube_rw.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.GROUP.plural, ml["id"], {"metadata": {"labels": {"tier": "gold"}}},
        _content_type="application/merge-patch+json")
    await eventually(_user_has(admin, bob, user_role="proxy_admin_viewer"), what="label on the group selects")
    await eventually(_status_is(kube_rw, bob, policy="gold"), what="label policy in the user's status")

    # Entra removes alice from the admin group: the role falls back to the default's within seconds.
    started = time.monotonic()
    status, _ = await scim("PATCH", f"/Groups/{group['id']}", {
        "schemas": [PATCH_OP], "Operations": [{"op": "Remove", "path": f'members[value eq "{alice}"]'}]})
    assert status in (200, 204)
    info = await eventually(_user_has(admin, alice, user_role="internal_user_viewer"), within=30, interval=0.05,
                            what="role back to the default after leaving the group")
    elapsed = time.monotonic() - started
    print(f"role fallback after leaving the admin group: {elapsed:.2f} s")
    assert info["max_budget"] == 5.0
    await eventually(_status_is(kube_rw, alice, policy="everyone", role="internal_user_viewer"),
                     what="status follows the fallback")

    async def role_events() -> list[str] | None:
        found = [m for _, r, m in await kube_rw.events(alice) if r == "RoleChanged"]
        return found or None

    messages = await eventually(role_events, what="RoleChanged Event on the ScimUser")
    assert any("proxy_admin to internal_user_viewer" in m and "everyone" in m for m in messages), messages

    # Deleting the default leaves no policy: the role a policy set falls back to internal_user, the
    # budget it set stays.
    await kube_rw.objects.delete_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, c.USER_POLICY.plural, "everyone")
    info = await eventually(_user_has(admin, alice, user_role="internal_user"), what="role fallback without policy")
    assert info["max_budget"] == 5.0
    st = await eventually(_status_is(kube_rw, alice, role="internal_user"), what="status without policy")
    assert "policy" not in st


async def test_ties_department_selector_drift_and_bad_policies(
    scim: Callable[..., Any], start_operator: Callable[..., OperatorProcess],
    kube_rw: Kube, admin: Admin, namespace: str,
) -> None:
    start_operator(drift_interval="1")
    # Two policies select Sales at the same priority with other settings: the name sorting first wins.
    await put_user_policy(kube_rw, "b-sales", {
        "userSelector": {"matchAttributes": {"department": "Sales"}}, "priority": 5,
        "user": {"role": "proxy_admin_viewer", "maxBudget": 70}})
    await put_user_policy(kube_rw, "a-sales", {
        "userSelector": {"matchAttributes": {"department": "sales"}}, "priority": 5,  # case-insensitive
        "user": {"role": "internal_user", "maxBudget": 7}})
    carol = await _create_user(scim, f"carol-{namespace}@example.com", schemas=[USER, ENTERPRISE],
                               **{ENTERPRISE: {"department": "Sales", "employeeNumber": "42"}})
    dave = await _create_user(scim, f"dave-{namespace}@example.com", schemas=[USER, ENTERPRISE],
                              **{ENTERPRISE: {"department": "Engineering"}})

    await eventually(_user_has(admin, carol, user_role="internal_user", max_budget=7.0),
                     what="department selector, tie won by the name sorting first")
    await eventually(_status_is(kube_rw, carol, policy="a-sales", role="internal_user"), what="winner in status")

    async def conflict(name: str) -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.USER_POLICY, name, "Conflict")
        return cond if cond and cond["status"] == "True" else None

    for name, rival in (("a-sales", "b-sales"), ("b-sales", "a-sales")):
        cond = await eventually(lambda n=name: conflict(n), what=f"tie reported on {name}")  # type: ignore[misc]
        assert cond["reason"] == "TiedPriority"
        assert rival in cond["message"] and "a-sales applies" in cond["message"], cond
    won = await kube_rw.get(c.USER_POLICY, "a-sales")
    assert won is not None and won["status"]["selectedUsers"] == 1
    # The other department matches neither; no default: its user is left as LiteLLM made it.
    assert (await eventually(_user_has(admin, dave)))["user_role"] != "proxy_admin_viewer"
    assert "policy" not in (await eventually(_status_is(kube_rw, dave, groups=0), what="dave synced"))

    # The department changes in the IdP: the user leaves both policies; the role falls back.
    status, _ = await scim("PATCH", f"/Users/{carol}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Engineering"}]})
    assert status in (200, 204)
    await eventually(_user_has(admin, carol, user_role="internal_user"), what="role kept managed")
    # Handled before the next PATCH (the role was internal_user before it too), so the operator sees
    # both changes rather than, at worst, none.
    await eventually(_status_is(kube_rw, carol, role="internal_user", policy=None),
                     what="no policy after department change")
    status, _ = await scim("PATCH", f"/Users/{carol}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Sales"}]})
    assert status in (200, 204)
    await eventually(_status_is(kube_rw, carol, policy="a-sales"), what="back in Sales")

    # A role changed by hand in LiteLLM is drift: reported and corrected like other user drift.
    status, _ = await admin.post("/user/update", {"user_id": carol, "user_role": "proxy_admin"})
    assert status == 200

    async def corrected() -> dict[str, Any] | None:
        cond = await kube_rw.condition(c.USER, carol, "Drifted")
        return cond if cond and cond["reason"] == "Corrected" and "user_role" in cond["message"] else None

    cond = await eventually(corrected, what="role drift corrected")
    assert "proxy_admin" in cond["message"]
    await eventually(_user_has(admin, carol, user_role="internal_user"), what="role restored in LiteLLM")

    # Bad values never reach the operator: the CRD schema refuses them.
    for bad in ({"user": {"role": "superuser"}}, {"user": {"maxBudget": -1}},
                {"user": {"budgetDuration": "soon"}},
                {"userSelector": {"matchAttributes": {"departmnt": "Sales"}}}):
        with pytest.raises(ApiException) as refused:
            await put_user_policy(kube_rw, "bad", {"default": True, **bad})
        assert refused.value.status == 422, bad
    # The operator carries on: a new policy still applies.
    await put_user_policy(kube_rw, "eng", {"userSelector": {"matchAttributes": {"department": "engineering"}},
                                           "user": {"rpmLimit": 3}})
    await eventually(_user_has(admin, dave, rpm_limit=3), what="operator still applies policies")


async def test_restart_keeps_applied_user_policies_without_writes_and_applies_one_changed_while_down(
    start_operator: Callable[..., OperatorProcess], kube_rw: Kube, admin: Admin, namespace: str,
) -> None:
    """A restart skips users whose status records the policy in force at its generation; a policy
    edited while no operator ran is still applied to every user it is in force for."""
    users = [f"pr{i}-{namespace}" for i in range(5)]
    await put_user_policy(kube_rw, "everyone", {
        "default": True, "user": {"role": "internal_user_viewer", "maxBudget": 5}})
    for name in users:
        await kube_rw.create(c.USER, name, {"userName": f"{name}@example.com"})
    group = f"unrelated-{namespace}"
    await kube_rw.create(c.GROUP, group, {"displayName": f"Unrelated {namespace}"})
    first = start_operator(drift_interval="600")
    for name in users:
        await eventually(_status_is(kube_rw, name, policy="everyone", role="internal_user_viewer"),
                         within=120, what=f"{name} under the default policy")
    await eventually(lambda: kube_rw.condition(c.GROUP, group, "Synced"), within=60, what="group synced")
    first.stop()

    second = start_operator(drift_interval="600")

    async def group_resumed() -> float | None:
        done = metric_sum(second.metrics(), "litellm_scim_operator_reconciles_total", kind="group")
        return done or None

    await eventually(group_resumed, within=60, what="the group resumed")
    # A group change user selectors look at starts a pass over the users whose policy may have moved.
    await kube_rw.objects.patch_namespaced_custom_object(
        c.API_GROUP, c.VERSION, kube_rw.ns, c.GROUP.plural, group, {"metadata": {"labels": {"touched": "yes"}}},
        _content_type="application/merge-patch+json")
    await asyncio.sleep(3)
    made = calls(second)
    assert made.get("/user/info", 0) == 0 and "/user/update" not in made, made
    second.stop()

    await put_user_policy(kube_rw, "everyone", {
        "default": True, "user": {"role": "internal_user_viewer", "maxBudget": 7}})
    start_operator(drift_interval="600")
    for name in users:
        await eventually(_user_has(admin, name, max_budget=7), within=60, what=f"{name} budget from the edited policy")
