"""Least privilege, asserted on what the chart renders: what each ServiceAccount may and may not do."""

from __future__ import annotations

from typing import Any

import pytest
from helmchart import Manifests, Render

GROUP = "scim.litellm-operator.dev"
SCIM_KINDS = ["scimusers", "scimgroups", "scimmembershards", "scimnameclaims"]
WRITE_VERBS = ["create", "update", "patch", "delete"]


def bound_rules(m: Manifests, service_account: str) -> dict[str, list[dict[str, Any]]]:
    """Rules granted to a ServiceAccount of the release namespace, per namespace they apply in."""
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in m.of_kind("Role")}
    granted: dict[str, list[dict[str, Any]]] = {}
    for binding in m.of_kind("RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                   and s["namespace"] == m.namespace for s in binding["subjects"]):
            continue
        assert binding["roleRef"]["kind"] == "Role", "only namespaced Roles may be bound"
        ns = binding["metadata"]["namespace"]
        role = roles[(ns, binding["roleRef"]["name"])]
        granted.setdefault(ns, []).extend(role["rules"])
    return granted


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """Whether the API server's RBAC would allow the request. `name` is the object's name for
    get/patch/..., or the metadata.name field selector of a list/watch (None: no selector)."""
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            names = rule.get("resourceNames")
            if not names or (name is not None and name in names):
                return True
    return False


def service_account(m: Manifests, component: str) -> str:
    name: str = m.deployment(component)["spec"]["template"]["spec"]["serviceAccountName"]
    return name


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "key-namespaces-and-standalone": {
        "operator": {"keySecretNamespaces": ["team-a", "team-b"], "replicas": 1, "peering": {"enabled": False}},
        "scimTokens": {"secretName": "idp-tokens"},
    },
}


@pytest.fixture(params=list(VARIANTS), scope="module")
def manifests(request: pytest.FixtureRequest, render: Render) -> Manifests:
    return render(VARIANTS[request.param])


def test_no_cluster_scope_no_wildcards_no_admin(manifests: Manifests) -> None:
    assert not manifests.of_kind("ClusterRole")
    assert not manifests.of_kind("ClusterRoleBinding")
    for role in manifests.of_kind("Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"wildcard {field} in {role['metadata']['name']}"
            assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
            assert "impersonate" not in rule["verbs"]
            assert not rule.get("nonResourceURLs")
    for binding in manifests.of_kind("RoleBinding"):
        assert binding["roleRef"]["name"] not in {"cluster-admin", "admin", "edit"}
        assert binding["roleRef"]["kind"] == "Role"


def token_secret_of(m: Manifests) -> str:
    args = dict(a.partition("=")[::2] for a in m.container("endpoint")["args"])
    return args["--token-secret"]


def test_endpoint_reads_and_writes_the_scim_resources_and_only_its_token_secret(
        manifests: Manifests) -> None:
    granted = bound_rules(manifests, service_account(manifests, "endpoint"))
    assert set(granted) == {manifests.namespace}, "the endpoint works in its own namespace only"
    rules = granted[manifests.namespace]
    for kind in SCIM_KINDS:
        for verb in ["get", "list", "watch", "create", "update", "delete"]:
            assert allows(rules, GROUP, kind, verb), f"endpoint cannot {verb} {kind}"
        # Every write of the endpoint is a create, a conditional replace or a delete.
        assert not allows(rules, GROUP, kind, "patch")
    # Status belongs to the operator.
    assert not allows(rules, GROUP, "scimusers/status", "patch")

    token_secret = manifests.one("Secret")["metadata"]["name"]
    assert token_secret == token_secret_of(manifests)
    for verb in ["get", "list", "watch"]:
        assert allows(rules, "", "secrets", verb, name=token_secret)
    # The chart renders the token Secret without a token: the endpoint issues the initial one with
    # a conditional update. Nothing more: no patch or delete of it, no other Secret, no create (a
    # create carries no name, so resourceNames could not confine it).
    assert allows(rules, "", "secrets", "update", name=token_secret)
    for verb in ["create", "patch", "delete"]:
        assert not allows(rules, "", "secrets", verb, name=token_secret)
    assert not allows(rules, "", "secrets", "create")
    # Listing or watching all Secrets (no name selector), reading or writing another Secret is refused.
    assert not allows(rules, "", "secrets", "list")
    assert not allows(rules, "", "secrets", "watch")
    for verb in ["get", *WRITE_VERBS]:
        assert not allows(rules, "", "secrets", verb, name="litellm-master")
    assert not allows(rules, "", "configmaps", "get")
    # The audit trail's Events: created, never changed or read back.
    assert allows(rules, "", "events", "create")
    for verb in ["patch", "update", "delete", "list"]:
        assert not allows(rules, "", "events", verb)


def test_endpoint_without_audit_events_may_not_create_events(render: Render) -> None:
    m = render({"endpoint": {"auditEvents": False}})
    rules = bound_rules(m, service_account(m, "endpoint"))[m.namespace]
    assert not allows(rules, "", "events", "create")


def test_endpoint_only_reads_a_token_secret_the_chart_does_not_make(render: Render) -> None:
    m = render({"scimTokens": {"create": False, "secretName": "idp-tokens"}})
    assert not m.of_kind("Secret")
    rules = bound_rules(m, service_account(m, "endpoint"))[m.namespace]
    for verb in ["get", "list", "watch"]:
        assert allows(rules, "", "secrets", verb, name="idp-tokens")
    for verb in WRITE_VERBS:
        assert not allows(rules, "", "secrets", verb, name="idp-tokens")


def test_operator_reads_resources_writes_status_events_and_key_secrets_only_where_listed(
        manifests: Manifests) -> None:
    granted = bound_rules(manifests, service_account(manifests, "operator"))
    ns = manifests.namespace
    rules = granted[ns]
    for kind in ["scimusers", "scimgroups"]:
        for verb in ["get", "list", "watch", "patch"]:
            assert allows(rules, GROUP, kind, verb)
        assert allows(rules, GROUP, f"{kind}/status", "patch")
        # Metadata and status are merge-patched: never a replace of the whole object.
        assert not allows(rules, GROUP, kind, "update")
        assert not allows(rules, GROUP, f"{kind}/status", "update")
        assert not allows(rules, GROUP, kind, "create"), "the spec is the endpoint's"
        assert not allows(rules, GROUP, kind, "delete")
    for kind in ["scimteampolicies", "scimuserpolicies"]:
        for verb in ["get", "list", "watch", "patch"]:
            assert allows(rules, GROUP, kind, verb)
        assert allows(rules, GROUP, f"{kind}/status", "patch")
        assert not allows(rules, GROUP, kind, "create")
        assert not allows(rules, GROUP, kind, "delete")
    for verb in ["get", "list", "watch"]:
        assert allows(rules, GROUP, "scimmembershards", verb)
    for verb in WRITE_VERBS:
        assert not allows(rules, GROUP, "scimmembershards", verb)
    assert not allows(rules, GROUP, "scimnameclaims", "list")
    assert allows(rules, "", "events", "create")
    assert allows(rules, "events.k8s.io", "events", "create")
    # The master key reaches the operator through secretKeyRef (the kubelet reads it), so the
    # operator itself needs no access to that Secret, nor to the SCIM tokens.
    assert not allows(rules, "", "secrets", "get", name="litellm-master")
    assert not allows(rules, "", "secrets", "get", name=manifests.one("Secret")["metadata"]["name"])

    listed = set(granted) - {ns}
    roles_ns = {r["metadata"]["namespace"] for r in manifests.of_kind("Role")} - {ns}
    assert listed == roles_ns
    for key_ns in listed:
        for verb in ["get", "list", "create", "update", "patch", "delete"]:
            assert allows(granted[key_ns], "", "secrets", verb, name="any-key-secret")
        assert not allows(granted[key_ns], "", "secrets", "watch"), "the operator never watches Secrets"
        assert not allows(granted[key_ns], GROUP, "scimusers", "get")
        assert not allows(granted[key_ns], "", "configmaps", "get")


def test_key_secret_namespaces_follow_values(render: Render) -> None:
    none = render()
    assert {r["metadata"]["namespace"] for r in none.of_kind("Role")} == {none.namespace}
    some = render({"operator": {"keySecretNamespaces": ["team-a", "team-b"]}})
    granted = bound_rules(some, service_account(some, "operator"))
    assert set(granted) == {some.namespace, "team-a", "team-b"}


def test_peering_permissions_only_with_peering_and_only_on_its_object(render: Render) -> None:
    with_peering = render({"operator": {"peering": {"name": "scim-peers"}}})
    rules = bound_rules(with_peering, service_account(with_peering, "operator"))[with_peering.namespace]
    assert allows(rules, "kopf.dev", "kopfpeerings", "list")
    assert allows(rules, "kopf.dev", "kopfpeerings", "watch")
    assert allows(rules, "kopf.dev", "kopfpeerings", "patch", name="scim-peers")
    assert not allows(rules, "kopf.dev", "kopfpeerings", "patch", name="another-operators-peering")
    assert not allows(rules, "kopf.dev", "kopfpeerings", "delete", name="scim-peers")

    standalone = render({"operator": {"replicas": 1, "peering": {"enabled": False}}})
    rules = bound_rules(standalone, service_account(standalone, "operator"))[standalone.namespace]
    assert not allows(rules, "kopf.dev", "kopfpeerings", "list")
