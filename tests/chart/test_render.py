"""What the chart renders with default and with non-default values: the properties a platform team
relies on (replicas, probes, hardening, secrets by reference, toggles) and that bad values fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helmchart import CHART, REQUIRED_VALUES, TOKEN_PATTERN, Manifests, Render, RenderError

from litellm_scim.cli import build_parser, settings_from_args
from scim_common import tokens
from scim_common.settings import EndpointSettings, OperatorSettings

NON_DEFAULT: dict[str, Any] = {
    "image": {"repository": "registry.example.com/platform/litellm-scim", "tag": "1.2.3"},
    "log": {"level": "debug", "format": "text"},
    "litellm": {"url": "https://llm.example.com", "masterKeySecret": {"name": "llm-admin", "key": "key"},
                "timeout": 10, "concurrency": 4},
    "scimTokens": {"secretName": "idp-tokens", "initialTokenName": "entra"},
    "endpoint": {
        "port": 8443, "metricsPort": 9100, "maxBodyBytes": 2097152, "maxResults": 200, "auditEvents": False,
        "ingress": {"enabled": True, "className": "nginx", "host": "scim.corp.example",
                    "tls": {"enabled": True, "secretName": "scim-cert"}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9},
        "podDisruptionBudget": {"maxUnavailable": 2},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    },
    "operator": {
        "replicas": 1, "peering": {"enabled": False}, "probePort": 18081, "metricsPort": 0,
        "driftInterval": 60, "driftPolicy": "report", "teamIdStrategy": "externalId",
        "userIdStrategy": "externalId",
        "deletionPolicy": "keep", "adopt": True, "ownerTag": "scim-prod",
        "keySecretNamespaces": ["ml-team"],
    },
    "metrics": {"podAnnotations": False, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "networkPolicy": {
        "scimFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
    },
}


@pytest.fixture(scope="module")
def default(render: Render) -> Manifests:
    return render()


@pytest.fixture(scope="module")
def custom(render: Render) -> Manifests:
    return render(NON_DEFAULT, release="idp", namespace="platform")


def args_of(m: Manifests, component: str) -> dict[str, str]:
    """--flag=value pairs of a container (bare flags map to "")."""
    out: dict[str, str] = {}
    for arg in m.container(component)["args"]:
        flag, _, value = arg.partition("=")
        out[flag] = value
    return out


def port_named(container: dict[str, Any], name: str) -> int:
    port: int = next(p["containerPort"] for p in container["ports"] if p["name"] == name)
    return port


# --- the processes the Deployments start --------------------------------------------------------

@pytest.mark.parametrize("variant", ["default", "custom"])
def test_every_argument_is_accepted_by_the_cli(variant: str, request: pytest.FixtureRequest) -> None:
    """The chart stays in step with the flags: each container's command line parses into settings."""
    m: Manifests = request.getfixturevalue(variant)
    for component, settings_cls in [("endpoint", EndpointSettings), ("operator", OperatorSettings)]:
        c = m.container(component)
        assert c["command"][0] == "litellm-scim"
        ns = build_parser().parse_args([*c["command"][1:], *c["args"]])
        settings = settings_from_args(settings_cls, ns)
        assert settings.namespace == m.namespace


def test_default_processes(default: Manifests) -> None:
    ep = args_of(default, "endpoint")
    assert default.container("endpoint")["command"] == ["litellm-scim", "endpoint"]
    assert ep["--port"] == "8080" and ep["--metrics-port"] == "9090"
    assert ep["--token-secret"] == "litellm-scim-tokens"
    assert "--base-url" not in ep, "without an ingress the endpoint derives URLs from each request"
    assert "--unique-group-external-id" not in ep, "group names are the team ids: externalIds may repeat"
    assert "--no-audit-events" not in ep, "audit Events are on by default"
    op = args_of(default, "operator")
    assert default.container("operator")["command"] == ["litellm-scim", "operator"]
    assert op["--litellm-url"] == REQUIRED_VALUES["litellm"]["url"]
    assert op["--peering"] == "litellm-scim-operator" and "--standalone" not in op
    assert op["--peering-lifetime"] == "60"
    assert op["--probe-port"] == "8081"
    assert op["--drift-policy"] == "correct" and "--no-adopt" in op
    image = default.container("endpoint")["image"]
    assert image == default.container("operator")["image"] == "litellm-scim-operator:0.1.0"


def test_custom_values_reach_the_processes(custom: Manifests) -> None:
    ep = args_of(custom, "endpoint")
    assert ep["--port"] == "8443" and ep["--metrics-port"] == "9100"
    assert ep["--token-secret"] == "idp-tokens"
    assert ep["--base-url"] == "https://scim.corp.example/scim/v2"
    assert ep["--max-body-bytes"] == "2097152" and ep["--max-results"] == "200"
    assert ep["--log-level"] == "debug" and ep["--log-format"] == "text"
    assert "--no-audit-events" in ep
    # The externalId names the team, so the endpoint keeps it unique among groups.
    assert "--unique-group-external-id" in ep
    op = args_of(custom, "operator")
    assert op["--litellm-url"] == "https://llm.example.com"
    assert op["--drift-interval"] == "60" and op["--drift-policy"] == "report"
    assert op["--team-id-strategy"] == "externalId" and op["--deletion-policy"] == "keep"
    assert op["--user-id-strategy"] == "externalId"
    assert "--adopt" in op and op["--owner-tag"] == "scim-prod"
    assert "--standalone" in op and "--peering" not in op and "--peering-lifetime" not in op
    assert op["--probe-port"] == "18081" and op["--metrics-port"] == "0"
    assert custom.container("operator")["image"] == "registry.example.com/platform/litellm-scim:1.2.3"


def test_image_digest_pins_both_deployments(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    m = render({"image": {"digest": digest}})
    for component in ("endpoint", "operator"):
        assert m.container(component)["image"] == f"litellm-scim-operator@{digest}"


# --- replicas and rollout ----------------------------------------------------------------------

def test_replicas_and_strategies(default: Manifests, custom: Manifests, render: Render) -> None:
    assert default.deployment("endpoint")["spec"]["replicas"] == 2
    assert default.deployment("endpoint")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    op = default.deployment("operator")["spec"]
    assert op["replicas"] == 2 and op["strategy"]["type"] == "RollingUpdate", "active + standby by peering"
    assert default.one("KopfPeering")["metadata"]["name"] == "litellm-scim-operator"

    op = custom.deployment("operator")["spec"]
    assert op["replicas"] == 1 and op["strategy"] == {"type": "Recreate"}
    assert not custom.of_kind("KopfPeering")

    single_with_peering = render({"operator": {"replicas": 1}}).deployment("operator")["spec"]
    assert single_with_peering["strategy"] == {"type": "Recreate"}


def test_two_operators_without_peering_are_refused(render: Render) -> None:
    with pytest.raises(RenderError, match="peering"):
        render({"operator": {"replicas": 2, "peering": {"enabled": False}}})


def test_pdb_and_hpa(default: Manifests, custom: Manifests, render: Render) -> None:
    pdb = default.one("PodDisruptionBudget", "endpoint")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == default.deployment("endpoint")["spec"]["selector"]["matchLabels"]
    assert not default.of_kind("HorizontalPodAutoscaler")

    hpa = custom.one("HorizontalPodAutoscaler", "endpoint")
    assert hpa["spec"]["scaleTargetRef"]["name"] == custom.deployment("endpoint")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert "replicas" not in custom.deployment("endpoint")["spec"], "the HPA owns the replica count"
    assert custom.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 2

    assert not render({"endpoint": {"podDisruptionBudget": {"enabled": False}}}).of_kind("PodDisruptionBudget")
    with pytest.raises(RenderError, match="minReplicas"):
        render({"endpoint": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}})


def test_ingress_with_and_without_tls(default: Manifests, custom: Manifests, render: Render) -> None:
    assert not default.of_kind("Ingress")
    ing = custom.one("Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["scim.corp.example"], "secretName": "scim-cert"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "scim.corp.example"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/scim/v2", "only the SCIM API is public, not probes or metrics"
    assert path["backend"]["service"]["name"] == custom.one("Service", "endpoint")["metadata"]["name"]

    plain = render({"endpoint": {"ingress": {"enabled": True, "host": "scim.lab", "tls": {"enabled": False}}}})
    assert "tls" not in plain.one("Ingress")["spec"]
    assert args_of(plain, "endpoint")["--base-url"] == "http://scim.lab/scim/v2"
    default_cert = render({"endpoint": {"ingress": {"enabled": True}}}).one("Ingress")["spec"]["tls"][0]
    assert default_cert["secretName"].endswith("-tls")


def test_service_targets_the_endpoint_pods(default: Manifests) -> None:
    svc = default.one("Service", "endpoint")
    pod_labels = default.deployment("endpoint")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http", "metrics": "metrics"}
    # The Service must not select the operator's pods.
    op_labels = default.deployment("operator")["spec"]["template"]["metadata"]["labels"]
    assert not svc["spec"]["selector"].items() <= op_labels.items()


# --- secrets ------------------------------------------------------------------------------------

def test_master_key_only_by_secret_reference(default: Manifests, custom: Manifests) -> None:
    for m, (name, key) in [(default, ("litellm-master", "masterkey")), (custom, ("llm-admin", "key"))]:
        env = {e["name"]: e for e in m.container("operator").get("env", [])}
        assert env["LITELLM_MASTER_KEY"]["valueFrom"] == {"secretKeyRef": {"name": name, "key": key}}
        assert "value" not in env["LITELLM_MASTER_KEY"]
        assert not any("KEY" in e["name"] and "value" in e for e in m.container("endpoint").get("env", []))
        assert not any(a.startswith("--litellm-master-key=") for a in m.container("operator")["args"])
    # values.yaml has no place for the key itself.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["litellm"]["masterKeySecret"]) == {"name", "key"}


def test_plaintext_master_key_in_values_is_rejected(render: Render) -> None:
    with pytest.raises(RenderError, match="masterKey"):
        render({"litellm": {"masterKey": "sk-1234"}})


def test_required_values_fail_with_a_clear_message(render: Render) -> None:
    with pytest.raises(RenderError, match=r"litellm\.url is required"):
        render(required=False)
    with pytest.raises(RenderError, match=r"litellm\.masterKeySecret\.name is required"):
        render({"litellm": {"url": "http://litellm:4000"}}, required=False)


def test_token_secret_is_rendered_without_any_token(default: Manifests, custom: Manifests,
                                                    render: Render) -> None:
    secret = default.one("Secret")
    assert secret["metadata"]["name"] == "litellm-scim-tokens"
    assert secret["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",  # uninstall keeps it
        tokens.INITIAL_TOKEN_ANNOTATION: "default",  # the endpoint issues it
    }
    # Not even an empty data: an upgrade from a manifest with one to a manifest without it would
    # delete every token in the live Secret.
    assert not {"data", "stringData"} & secret.keys()
    assert custom.one("Secret")["metadata"]["annotations"][tokens.INITIAL_TOKEN_ANNOTATION] == "entra"
    assert not render({"scimTokens": {"create": False}}).of_kind("Secret")


@pytest.mark.parametrize("values", [
    {},
    NON_DEFAULT,
    {"scimTokens": {"create": False}},
    {"scimTokens": {"secretName": "idp-tokens", "initialTokenName": "okta"}, "endpoint": {"replicas": 5}},
], ids=["default", "custom", "no-token-secret", "renamed"])
def test_no_rendered_document_holds_a_token_and_rendering_is_stable(render: Render, values: dict[str, Any]) -> None:
    """Nothing random, nothing from the cluster, nothing from the clock: the same values render the
    same manifests (which is also what keeps tools that render without a cluster stable)."""
    first = render(values)
    for doc in first.docs:
        assert not TOKEN_PATTERN.search(yaml.safe_dump(doc)), doc["metadata"]["name"]
        if doc["kind"] == "Secret":
            assert not {"data", "stringData"} & doc.keys()
    assert render(values).docs == first.docs


# --- hardening ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["default", "custom"])
def test_pods_are_hardened(variant: str, request: pytest.FixtureRequest) -> None:
    m: Manifests = request.getfixturevalue(variant)
    for component in ("endpoint", "operator"):
        pod = m.deployment(component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag)
        c = m.container(component)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys()


def test_probes_point_at_the_right_ports(default: Manifests, custom: Manifests) -> None:
    for m, http_port in [(default, 8080), (custom, 8443)]:
        c = m.container("endpoint")
        assert port_named(c, "http") == http_port == int(args_of(m, "endpoint")["--port"])
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for m, probe_port in [(default, 8081), (custom, 18081)]:
        c = m.container("operator")
        assert port_named(c, "probe") == probe_port == int(args_of(m, "operator")["--probe-port"])
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probe"}


# --- network and metrics ------------------------------------------------------------------------

def test_network_policies(default: Manifests, custom: Manifests, render: Render) -> None:
    np = default.one("NetworkPolicy", "endpoint")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"]["matchLabels"] == default.deployment("endpoint")["spec"]["selector"]["matchLabels"]
    scim, metrics = np["spec"]["ingress"]
    assert scim["ports"] == [{"port": 8080, "protocol": "TCP"}] and "from" not in scim
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    op_np = default.one("NetworkPolicy", "operator")
    assert op_np["spec"]["ingress"] == [{"ports": [{"port": 9090, "protocol": "TCP"}], "from": metrics["from"]}]

    scim, metrics = custom.one("NetworkPolicy", "endpoint")["spec"]["ingress"]
    assert scim["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert scim["from"] == NON_DEFAULT["networkPolicy"]["scimFrom"]
    assert metrics["from"] == NON_DEFAULT["networkPolicy"]["metricsFrom"]
    assert custom.one("NetworkPolicy", "operator")["spec"]["ingress"] == [], "metrics off: no ingress at all"

    assert not render({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


def test_metrics_annotations_and_service_monitor(default: Manifests, custom: Manifests) -> None:
    for component in ("endpoint", "operator"):
        ann = default.deployment(component)["spec"]["template"]["metadata"]["annotations"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"}
    assert not default.of_kind("ServiceMonitor")
    assert "annotations" not in custom.deployment("endpoint")["spec"]["template"]["metadata"]

    sm = custom.one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    # Operator metrics are off in `custom`, so only the endpoint's Service carries a metrics port.
    metrics_services = [s for s in custom.of_kind("Service") if any(p["name"] == "metrics" for p in s["spec"]["ports"])]
    assert [s["metadata"]["labels"]["app.kubernetes.io/component"] for s in metrics_services] == ["endpoint"]
    for svc in metrics_services:
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


# --- values schema, lint, Kubernetes schemas ------------------------------------------------------

@pytest.mark.parametrize("typo, message", [
    ({"endpoint": {"replica": 3}}, "replica"),
    ({"operater": {"replicas": 1}}, "operater"),
    ({"operator": {"driftPolicy": "fix"}}, "driftPolicy"),
    ({"endpoint": {"ingress": {"tls": {"enable": True}}}}, "enable"),
    ({"endpoint": {"port": "eighty"}}, "port"),
    ({"scimTokens": {"secretName": "Not_A_Name"}}, "secretName"),
    ({"scimTokens": {"initialTokenName": "-x"}}, "initialTokenName"),
])
def test_schema_rejects_typos_and_bad_values(render: Render, typo: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(typo)


def test_initial_token_name_follows_the_token_name_rule() -> None:
    """One rule for token names: the schema refuses what `litellm-scim token` would refuse."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    rule = schema["properties"]["scimTokens"]["properties"]["initialTokenName"]
    assert rule["pattern"] == tokens.NAME_PATTERN.pattern
    assert rule["maxLength"] == 63


def test_helm_lint_is_clean(helm: Path) -> None:
    plain = subprocess.run([str(helm), "lint", str(CHART)], capture_output=True, text=True, check=False)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    strict = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--set", "litellm.url=http://litellm:4000",
         "--set", "litellm.masterKeySecret.name=litellm-master"],
        capture_output=True, text=True, check=False)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert "[WARNING]" not in strict.stdout and "[ERROR]" not in strict.stdout


# Kinds that are not built into Kubernetes: checked elsewhere (KopfPeering against its CRD on the
# real API server) or owned by another project's CRDs (ServiceMonitor).
CUSTOM_KINDS = {"KopfPeering", "ServiceMonitor"}


@pytest.mark.parametrize("kube_version", ["1.25.0", "1.32.0"])
@pytest.mark.parametrize("variant", ["default", "custom"])
def test_manifests_validate_against_kubernetes_schemas(variant: str, kube_version: str,
                                                        request: pytest.FixtureRequest) -> None:
    m: Manifests = request.getfixturevalue(variant)
    checked = 0
    for doc in m.docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)
        checked += 1
    assert checked == len(m.docs) - sum(1 for d in m.docs if d["kind"] in CUSTOM_KINDS) > 10


def test_kubernetes_validate_catches_a_broken_manifest(default: Manifests) -> None:
    """The validation above can fail: a misspelt field in a Deployment is reported."""
    broken = yaml.safe_load(yaml.safe_dump(default.deployment("endpoint")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.32.0", strict=True)


# --- NOTES ---------------------------------------------------------------------------------------

def test_notes_print_tenant_url_and_token_command(render: Render, notes_chart: Path) -> None:
    with_ingress = render({"endpoint": {"ingress": {"enabled": True, "host": "scim.corp.example"}}},
                          chart=notes_chart, namespace="idp")
    notes = with_ingress.one("ConfigMap", name="rendered-notes")["data"]["notes"]
    assert "https://scim.corp.example/scim/v2" in notes
    assert ("kubectl -n idp get secret litellm-scim-tokens -o jsonpath='{.data.default}' | base64 -d"
            in notes)
    words = " ".join(notes.split())
    assert 'issues the first token, "default", into Secret litellm-scim-tokens within seconds of starting' in words
    assert "rollout status deploy/scim-litellm-scim-operator-endpoint" in notes

    by_hand = render({"scimTokens": {"create": False}}, chart=notes_chart, namespace="idp")
    notes = by_hand.one("ConfigMap", name="rendered-notes")["data"]["notes"]
    assert "litellm-scim token create default --namespace idp --token-secret litellm-scim-tokens" in notes
    assert "jsonpath" not in notes

    without = render(chart=notes_chart, namespace="idp").one("ConfigMap", name="rendered-notes")["data"]["notes"]
    assert "http://scim-litellm-scim-operator-endpoint.idp.svc:80/scim/v2" in without
    assert "port-forward" in without
