"""The chart's optional egress rules: with ``networkPolicy.egress.enabled`` the operator pod may reach
only LiteLLM, the API server and DNS, the endpoint pod only the API server and DNS.

No network plugin runs in the tests, so the rendered policies are checked twice: against the Kubernetes
schemas (kubernetes-validate), and by evaluating them the way the NetworkPolicy API defines it for
the connections each pod makes or must not make."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate
import pytest
from helmchart import Manifests, Render, RenderError

LITELLM_NS = {"kubernetes.io/metadata.name": "litellm"}
LITELLM_POD = {"app": "litellm"}
API_SERVER = "10.0.0.10"
EGRESS: dict[str, Any] = {"networkPolicy": {"egress": {
    "enabled": True,
    "litellmTo": [{"namespaceSelector": {"matchLabels": LITELLM_NS}, "podSelector": {"matchLabels": LITELLM_POD}}],
    "apiServerTo": [{"ipBlock": {"cidr": f"{API_SERVER}/32"}}],
}}}


@dataclass(frozen=True)
class Peer:
    """The other end of a connection: a pod (namespace and pod labels) or an address outside the cluster."""

    ip: str
    namespace: dict[str, str] = field(default_factory=dict)
    pod: dict[str, str] | None = None  # None: not a pod


KUBE_DNS = Peer("10.96.0.20", {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
LITELLM = Peer("10.2.0.5", LITELLM_NS, LITELLM_POD)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_matches(rule_peer: dict[str, Any], peer: Peer, policy_namespace: dict[str, str]) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        ip = ipaddress.ip_address(peer.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if peer.pod is None:
        return False  # selectors match pods only
    ns_sel, pod_sel = rule_peer.get("namespaceSelector"), rule_peer.get("podSelector")
    in_namespace = selects(ns_sel, peer.namespace) if ns_sel is not None else peer.namespace == policy_namespace
    return in_namespace and (pod_sel is None or selects(pod_sel, peer.pod))


def port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol
               and ("port" not in p or p["port"] <= port <= p.get("endPort", p["port"])) for p in ports)


def egress_allowed(m: Manifests, component: str, peer: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether the component's pod may open this connection under the rendered NetworkPolicies."""
    pod = m.deployment(component)["spec"]["template"]["metadata"]["labels"]
    own_ns = {"kubernetes.io/metadata.name": m.namespace}
    policies = [p for p in m.of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], pod)
                and "Egress" in p["spec"].get("policyTypes", [])]
    if not policies:
        return True  # not isolated for egress
    return any(
        (not rule.get("to") or any(peer_matches(t, peer, own_ns) for t in rule["to"]))
        and port_matches(rule.get("ports"), port, protocol)
        for policy in policies for rule in policy["spec"].get("egress") or [])


REACHES = [  # (who, where, port, protocol, allowed for the operator, allowed for the endpoint)
    ("LiteLLM", LITELLM, 4000, "TCP", True, False),
    ("LiteLLM on another port", LITELLM, 22, "TCP", False, False),
    ("API server", Peer(API_SERVER), 443, "TCP", True, True),
    ("API server, 6443", Peer(API_SERVER), 6443, "TCP", True, True),
    ("cluster DNS", KUBE_DNS, 53, "UDP", True, True),
    ("cluster DNS over TCP", KUBE_DNS, 53, "TCP", True, True),
    ("cluster DNS, other port", KUBE_DNS, 8080, "TCP", False, False),
    ("another address on 443", Peer("10.0.0.11"), 443, "TCP", False, False),
    ("the internet", Peer("203.0.113.7"), 443, "TCP", False, False),
    ("a pod of LiteLLM's namespace", Peer("10.2.0.6", LITELLM_NS, {"app": "postgres"}), 5432, "TCP", False, False),
    ("a pod in the release namespace", Peer("10.3.0.1", {"kubernetes.io/metadata.name": "identity"},
                                            {"app": "other"}), 4000, "TCP", False, False),
]


@pytest.fixture(scope="module")
def egress(render: Render) -> Manifests:
    return render(EGRESS)


@pytest.mark.parametrize("who, peer, port, protocol, operator, endpoint", REACHES, ids=[r[0] for r in REACHES])
def test_egress_allows_exactly_litellm_api_server_and_dns(egress: Manifests, who: str, peer: Peer, port: int,
                                                          protocol: str, operator: bool, endpoint: bool) -> None:
    assert egress_allowed(egress, "operator", peer, port, protocol) is operator
    assert egress_allowed(egress, "endpoint", peer, port, protocol) is endpoint


def test_egress_is_open_by_default(render: Render) -> None:
    default = render()
    for np in default.of_kind("NetworkPolicy"):
        assert np["spec"]["policyTypes"] == ["Ingress"] and "egress" not in np["spec"]
    for who, peer, port, protocol, _, _ in REACHES:
        assert egress_allowed(default, "operator", peer, port, protocol), who
        assert egress_allowed(default, "endpoint", peer, port, protocol), who


def test_ingress_is_the_same_with_egress_on(render: Render, egress: Manifests) -> None:
    default = render()
    for component in ("endpoint", "operator"):
        assert egress.one("NetworkPolicy", component)["spec"]["ingress"] == \
            default.one("NetworkPolicy", component)["spec"]["ingress"]
        assert egress.one("NetworkPolicy", component)["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_every_egress_rule_names_its_peers(egress: Manifests) -> None:
    """A rule without `to` (or with an empty one) would allow every destination."""
    for np in egress.of_kind("NetworkPolicy"):
        assert np["spec"]["egress"]
        assert all(rule.get("to") for rule in np["spec"]["egress"])


def test_custom_ports_and_no_dns_rule(render: Render) -> None:
    values = {"networkPolicy": {"egress": {**EGRESS["networkPolicy"]["egress"], "dnsTo": [],
                                           "litellmPorts": [{"port": 443, "protocol": "TCP"}],
                                           "apiServerPorts": [{"port": 16443, "protocol": "TCP"}]}}}
    m = render(values)
    assert egress_allowed(m, "operator", LITELLM, 443) and not egress_allowed(m, "operator", LITELLM, 4000)
    assert egress_allowed(m, "endpoint", Peer(API_SERVER), 16443)
    assert not egress_allowed(m, "endpoint", Peer(API_SERVER), 443)
    assert not egress_allowed(m, "operator", KUBE_DNS, 53, "UDP")
    assert [len(m.one("NetworkPolicy", c)["spec"]["egress"]) for c in ("operator", "endpoint")] == [2, 1]


@pytest.mark.parametrize("missing", ["litellmTo", "apiServerTo"])
def test_egress_without_litellm_or_api_server_peers_is_refused(render: Render, missing: str) -> None:
    values = {"networkPolicy": {"egress": {**EGRESS["networkPolicy"]["egress"], missing: []}}}
    with pytest.raises(RenderError, match=f"networkPolicy.egress.{missing}"):
        render(values)


@pytest.mark.parametrize("typo, message", [
    ({"networkPolicy": {"egress": {"enable": True}}}, "enable"),
    ({"networkPolicy": {"egress": {"litellmPorts": [{"prot": 4000}]}}}, "prot"),
    ({"networkPolicy": {"egress": {"dnsPorts": [{"port": 53, "protocol": "udp"}]}}}, "protocol"),
])
def test_schema_rejects_typos_in_egress(render: Render, typo: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(typo)


@pytest.mark.parametrize("kube_version", ["1.25.0", "1.32.0"])
def test_egress_policies_validate_against_kubernetes_schemas(egress: Manifests, kube_version: str) -> None:
    policies = egress.of_kind("NetworkPolicy")
    assert len(policies) == 2
    for np in policies:
        kubernetes_validate.validate(np, kube_version, strict=True)


def test_the_evaluator_above_can_say_no(render: Render) -> None:
    """The evaluation is not vacuous: a policy allowing LiteLLM only on 4000 refuses 4001."""
    m = render(EGRESS)
    assert egress_allowed(m, "operator", LITELLM, 4000)
    assert not egress_allowed(m, "operator", LITELLM, 4001)
