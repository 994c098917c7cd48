"""Contract check against the REAL API server: the specs ``convert`` builds are stored as they are
(nothing pruned, defaulted differently or rejected), and values at the CRD limits are accepted, so the
limits enforced before writing are the API server's."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from typed_requests import group_from_request, user_from_request

import scim_contract as c
from scim_endpoint.convert import (
    DEFAULT_MAX_LENGTH,
    MAX_ITEMS,
    group_to_spec,
    user_to_spec,
)
from scim_endpoint.schema import ENTERPRISE_URN, USER_URN


async def _store(api: client.ApiClient, namespace: str, plural: str, kind: str, spec: dict[str, Any]) -> Any:
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": c.API_VERSION, "kind": kind,
            "metadata": {"generateName": "t-"}, "spec": spec}
    created = await custom.create_namespaced_custom_object(c.API_GROUP, c.VERSION, namespace, plural, body)
    return await custom.get_namespaced_custom_object(
        c.API_GROUP, c.VERSION, namespace, plural, created["metadata"]["name"]
    )


async def test_full_user_spec_is_stored_unchanged(kube_api: client.ApiClient, namespace: str) -> None:
    user = user_from_request({
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": "u" * DEFAULT_MAX_LENGTH,
        "externalId": "ext",
        "active": "False",
        "name": {"givenName": "G", "familyName": "F", "honorificPrefix": "p" * 256},
        "displayName": "D", "nickName": "N", "profileUrl": "https://x/" + "p" * 2000, "title": "T",
        "userType": "Employee", "preferredLanguage": "en", "locale": "en-US", "timezone": "Europe/Paris",
        "emails": [{"value": f"{i}@x", "type": "work", "primary": i == 0, "display": "d"} for i in range(MAX_ITEMS)],
        "phoneNumbers": [{"value": "1"}], "ims": [{"value": "i"}], "photos": [{"value": "https://p"}],
        "entitlements": [{"value": "e"}], "roles": [{"value": "r"}], "x509Certificates": [{"value": "MII"}],
        "addresses": [{"formatted": "a" * 2048, "postalCode": "1" * 256, "country": "FR", "primary": True}],
        ENTERPRISE_URN: {"employeeNumber": "1", "costCenter": "c", "organization": "o", "division": "d",
                         "department": "x", "manager": {"value": "m", "displayName": "M"}},
    })
    spec = user_to_spec(user)
    stored = await _store(kube_api, namespace, "scimusers", "ScimUser", spec)
    assert stored["spec"] == spec


async def test_user_without_active_defaults_to_active(kube_api: client.ApiClient, namespace: str) -> None:
    spec = user_to_spec(user_from_request({"userName": "a"}))
    stored = await _store(kube_api, namespace, "scimusers", "ScimUser", spec)
    assert stored["spec"] == {"userName": "a", "active": True}


async def test_group_spec_is_stored_unchanged(kube_api: client.ApiClient, namespace: str) -> None:
    spec = group_to_spec(group_from_request({"displayName": "g" * DEFAULT_MAX_LENGTH, "externalId": "e",
                                             "members": [{"value": "u1"}]}))
    stored = await _store(kube_api, namespace, "scimgroups", "ScimGroup", spec)
    assert stored["spec"] == spec
