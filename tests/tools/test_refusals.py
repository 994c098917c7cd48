"""``kube.refusal``: a 401 or 403 from the API server as one line in RBAC's terms, whatever the
shape of the Status it came with."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from scim_common import kube

USER = "system:serviceaccount:scim:ops"


def refused(status: int, message: str, details: dict[str, Any] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden" if status == 403 else "Unauthorized")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status, "details": details or {}})
    return exc


def test_the_api_servers_words_win_over_the_callers_guess() -> None:
    exc = refused(403, f'secrets "t" is forbidden: User "{USER}" cannot update resource "secrets" in API group "" '
                  'in the namespace "scim"', {"name": "t", "kind": "secrets"})
    line = kube.refusal(exc, kube.Request("patch", "secrets", "scim", "t"))
    assert line == f'cannot update secrets "t" in namespace scim (forbidden for {USER})'


def test_cluster_scope_and_a_refused_create_carry_no_name() -> None:
    exc = refused(403, f'namespaces is forbidden: User "{USER}" cannot create resource "namespaces" in API group "" '
                  "at the cluster scope", {"kind": "namespaces"})
    line = kube.refusal(exc, kube.Request("create", "namespaces", name="dev"))
    assert line == f"cannot create namespaces at cluster scope (forbidden for {USER})"


def test_a_named_subresource_keeps_its_name_and_the_authorizers_reason() -> None:
    exc = refused(403, f'serviceaccounts "op" is forbidden: User "{USER}" cannot create resource '
                  '"serviceaccounts/token" in API group "" in the namespace "scim": RBAC: role "x" not found',
                  {"name": "op", "kind": "serviceaccounts"})
    line = kube.refusal(exc, kube.Request("create", "serviceaccounts/token", "scim", "op"))
    assert line == (f'cannot create serviceaccounts/token "op" in namespace scim '
                    f'(forbidden for {USER}: RBAC: role "x" not found)')


def test_a_privilege_escalation_is_one_line_with_the_first_missing_rule() -> None:
    exc = refused(403, f'roles.rbac.authorization.k8s.io "ep" is forbidden: user "{USER}" (groups=["a" "b"]) is '
                  "attempting to grant RBAC permissions not currently held:\n"
                  '{APIGroups:["x.dev"], Resources:["users"], Verbs:["get"]}\n'
                  '{APIGroups:["x.dev"], Resources:["users"], Verbs:["list"]}', {"name": "ep", "kind": "roles"})
    line = kube.refusal(exc, kube.Request("create", "roles", "scim", "ep"))
    assert line == (f'cannot create roles in namespace scim (forbidden for {USER}, who does not hold the 2 '
                    'permissions roles "ep" grants, e.g. {APIGroups:["x.dev"], Resources:["users"], Verbs:["get"]})')


def test_other_wordings_are_quoted_on_one_line_and_401_says_the_credentials_were_rejected() -> None:
    exc = refused(403, "denied by policy\nsee the admin")
    assert kube.refusal(exc, kube.Request("get", "secrets", "scim", "t")) == (
        'cannot get secrets "t" in namespace scim (forbidden: denied by policy see the admin)')
    assert kube.refusal(refused(401, "Unauthorized"), kube.Request("get", "secrets", "scim", "t")) == (
        'cannot get secrets "t" in namespace scim: the cluster rejected the credentials (401 Unauthorized)')
    assert kube.refusal(refused(404, "not found"), kube.Request("get", "secrets", "scim", "t")) is None
