"""``litellm-scim token create|list|revoke`` against the real API server: what the person at the terminal
sees, and what ends up in the Secret the endpoint reads."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from litellm_scim import chart
from litellm_scim.peers import free_port
from scim_common import tokens

SECRET = tokens.DEFAULT_SECRET


@dataclass
class Result:
    code: int
    out: str
    err: str


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "litellm_scim.cli", "token", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def token_from(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Secret token:")]
    assert len(lines) == 1, output
    return lines[0].split(":", 1)[1].strip()


async def read_secret(api: client.ApiClient, namespace: str) -> client.V1Secret:
    return await client.CoreV1Api(api).read_namespaced_secret(SECRET, namespace)


async def test_create_prints_url_and_token_once_and_stores_it(
        kube_api: client.ApiClient, namespace: str, kubeconfig: str) -> None:
    res = await cli("create", "okta", "--namespace", namespace, "--kubeconfig", kubeconfig,
                    "--base-url", "https://scim.example.com")
    assert res.code == 0, res.err
    token = token_from(res.out)
    assert (res.out + res.err).count(token) == 1
    assert "SCIM tenant URL: https://scim.example.com/scim/v2" in res.out

    secret = await read_secret(kube_api, namespace)
    assert tokens.parse_token_secret(secret) == {"okta": token}
    assert secret.metadata.labels["app.kubernetes.io/part-of"] == "litellm-scim-operator"
    created = datetime.fromisoformat(secret.metadata.annotations["tokens.scim.litellm-operator.dev/okta"])
    assert created.tzinfo is not None


async def test_create_without_base_url_says_how_to_find_the_url(namespace: str, kubeconfig: str) -> None:
    res = await cli("create", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 0, res.err
    assert "--base-url" in res.out
    token_from(res.out)


async def test_tokens_are_random_with_at_least_256_bits(kube_api: client.ApiClient, namespace: str) -> None:
    made = [await tokens.create_token(kube_api, namespace, SECRET) for _ in range(5)]
    values = [token for _, token in made]
    assert len(set(values)) == 5
    assert len({name for name, _ in made}) == 5  # default names never collide, even within one second
    for value in values:
        assert value.startswith(tokens.TOKEN_PREFIX)
        body = value[len(tokens.TOKEN_PREFIX):]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 256


async def test_list_shows_names_and_times_never_values(namespace: str, kubeconfig: str) -> None:
    made = [await cli("create", name, "--namespace", namespace, "--kubeconfig", kubeconfig)
            for name in ("entra", "okta")]
    values = [token_from(r.out) for r in made]

    res = await cli("list", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split() == ["NAME", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == ["entra", "okta"]
    for line in lines[1:]:
        datetime.fromisoformat(line.split()[1])
    for value in values:
        assert value not in res.out + res.err
        assert value[len(tokens.TOKEN_PREFIX):][:12] not in res.out + res.err


async def test_list_without_secret_says_so(namespace: str, kubeconfig: str) -> None:
    res = await cli("list", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 0, res.err
    assert "No tokens" in res.out


async def test_revoke_removes_only_that_token(kube_api: client.ApiClient, namespace: str, kubeconfig: str) -> None:
    _, old = await tokens.create_token(kube_api, namespace, SECRET, "old")
    _, new = await tokens.create_token(kube_api, namespace, SECRET, "new")

    res = await cli("revoke", "old", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 0, res.err
    assert old not in res.out + res.err
    secret = await read_secret(kube_api, namespace)
    assert tokens.parse_token_secret(secret) == {"new": new}
    assert "tokens.scim.litellm-operator.dev/old" not in secret.metadata.annotations
    assert "tokens.scim.litellm-operator.dev/new" in secret.metadata.annotations


async def test_revoke_unknown_name_fails_clearly(kube_api: client.ApiClient, namespace: str,
                                                 kubeconfig: str) -> None:
    await tokens.create_token(kube_api, namespace, SECRET, "entra")
    before = (await read_secret(kube_api, namespace)).metadata.resource_version

    res = await cli("revoke", "okta", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 1
    assert res.err.strip().count("\n") == 0 and "Traceback" not in res.err
    assert "no token named 'okta'" in res.err and "entra" in res.err
    assert (await read_secret(kube_api, namespace)).metadata.resource_version == before

    missing = await cli("revoke", "x", "--namespace", f"{namespace}-absent", "--kubeconfig", kubeconfig)
    assert missing.code == 1 and "does not exist" in missing.err

    no_name = await cli("revoke", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert no_name.code == 2 and "NAME" in no_name.err


async def test_create_refuses_an_existing_name_and_changes_nothing(
        kube_api: client.ApiClient, namespace: str, kubeconfig: str) -> None:
    _, first = await tokens.create_token(kube_api, namespace, SECRET, "okta")
    res = await cli("create", "okta", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 1
    assert "already exists" in res.err and "Traceback" not in res.err
    assert "Secret token" not in res.out
    assert tokens.parse_token_secret(await read_secret(kube_api, namespace)) == {"okta": first}


async def test_create_refuses_a_name_the_secret_cannot_hold(namespace: str, kubeconfig: str) -> None:
    res = await cli("create", "bad/name", "--namespace", namespace, "--kubeconfig", kubeconfig)
    assert res.code == 1 and "invalid token name" in res.err and "Traceback" not in res.err


async def test_concurrent_creates_all_land(kube_api: client.ApiClient, namespace: str) -> None:
    # All writers start before the Secret exists: both the create race and resourceVersion conflicts.
    names = [f"idp-{i}" for i in range(8)]
    made = await asyncio.gather(*(tokens.create_token(kube_api, namespace, SECRET, n) for n in names))
    assert tokens.parse_token_secret(await read_secret(kube_api, namespace)) == dict(made)


async def test_concurrent_create_and_revoke_lose_nothing(kube_api: client.ApiClient, namespace: str) -> None:
    keep = dict([await tokens.create_token(kube_api, namespace, SECRET, f"keep-{i}") for i in range(3)])
    await asyncio.gather(*(tokens.create_token(kube_api, namespace, SECRET, f"drop-{i}") for i in range(3)))

    ops = [tokens.revoke_token(kube_api, namespace, SECRET, f"drop-{i}") for i in range(3)]
    adds = [tokens.create_token(kube_api, namespace, SECRET, f"add-{i}") for i in range(3)]
    results = await asyncio.gather(*ops, *adds)
    added = dict(r for r in results if r is not None)
    assert tokens.parse_token_secret(await read_secret(kube_api, namespace)) == {**keep, **added}


async def test_create_keeps_what_else_is_on_an_existing_secret(kube_api: client.ApiClient, namespace: str) -> None:
    # e.g. a Secret created by the Helm chart, with its own labels and annotations
    await client.CoreV1Api(kube_api).create_namespaced_secret(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "scim"}},
        "type": "Opaque",
    })
    name, token = await tokens.create_token(kube_api, namespace, SECRET)
    secret = await read_secret(kube_api, namespace)
    assert tokens.parse_token_secret(secret) == {name: token}
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert secret.metadata.labels["app.kubernetes.io/part-of"] == "litellm-scim-operator"
    assert secret.metadata.annotations["meta.helm.sh/release-name"] == "scim"


@pytest.fixture
def dead_kubeconfig(tmp_path: Path, kubeconfig: str) -> Path:
    """The test cluster's kubeconfig, pointed at a port nobody listens on."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in cfg["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "kubeconfig"
    dead.write_text(yaml.safe_dump(cfg))
    return dead


async def test_unreachable_cluster_is_one_clear_line(dead_kubeconfig: Path) -> None:
    dead = dead_kubeconfig
    for action in (["list"], ["create"], ["revoke", "x"]):
        res = await cli(*action, "--kubeconfig", str(dead))
        assert res.code == 1, res
        assert res.err.startswith("litellm-scim token: error: cannot reach the Kubernetes API server")
        assert res.err.count("\n") == 1 and "Traceback" not in res.err
        assert "Secret token" not in res.out


async def test_missing_kubeconfig_is_one_clear_line(tmp_path: Path) -> None:
    res = await cli("list", "--kubeconfig", str(tmp_path / "nope"))
    assert res.code == 1
    assert res.err == f"litellm-scim token: error: kubeconfig not found: {tmp_path / 'nope'}\n"


# --- under RBAC: run as a ServiceAccount, every refusal is one line naming what is missing ---------


@dataclass
class Identity:
    kubeconfig: str
    user: str

    def denied(self, verb: str, namespace: str, named: bool = True) -> str:
        secret = f' "{SECRET}"' if named else ""
        return (f"litellm-scim token: error: cannot {verb} secrets{secret} in namespace {namespace} "
                f"(forbidden for {self.user})\n")


MakeIdentity = Callable[[str, list[str]], Awaitable[Identity]]


async def _wait_authenticated(kubeconfig: str, within: float = 5.0) -> None:
    """A new ServiceAccount's token is accepted once the API server's cache has the account."""
    from scim_common import kube

    api = await kube.api_client(kubeconfig)
    async with api:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                await client.AuthenticationV1Api(api).create_self_subject_review({})  # type: ignore[arg-type]
                return
            except client.exceptions.ApiException as exc:
                if exc.status != 401 or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)


@pytest.fixture
def identity(kube_api: client.ApiClient, namespace: str, kubeconfig: str, tmp_path: Path) -> MakeIdentity:
    """identity(name, verbs): a ServiceAccount of the test namespace allowed ``verbs`` on the token Secret
    only (none: no Role at all), and a kubeconfig with its TokenRequest token, as an operator's
    automation would run the CLI."""

    async def make(name: str, verbs: list[str]) -> Identity:
        core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
        await core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})  # type: ignore[arg-type]
        user = chart.service_account_user(namespace, name)
        if verbs:
            await rbac.create_namespaced_role(namespace, {  # type: ignore[arg-type]
                "metadata": {"name": name},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": verbs}]})
            await rbac.create_namespaced_role_binding(namespace, {  # type: ignore[arg-type]
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
            for verb in verbs:
                await chart.wait_until_allowed(kube_api, user, verb=verb, resource="secrets", namespace=namespace,
                                               name=SECRET)
        server, ca = chart.cluster_of(kubeconfig)
        token = await chart.service_account_token(kube_api, namespace, name)
        path = chart.write_token_kubeconfig(tmp_path / f"{name}.kubeconfig", server=server, ca_pem=ca, token=token,
                                            namespace=namespace, user=user)
        await _wait_authenticated(str(path))
        return Identity(str(path), user)

    return make


async def test_without_rights_every_action_names_the_refused_get(
        identity: MakeIdentity, kube_api: client.ApiClient, namespace: str) -> None:
    await tokens.create_token(kube_api, namespace, SECRET, "okta")
    nobody = await identity("nobody", [])
    for action in (["list"], ["create", "entra"], ["revoke", "okta"]):
        res = await cli(*action, "--namespace", namespace, "--kubeconfig", nobody.kubeconfig)
        assert (res.code, res.err) == (1, nobody.denied("get", namespace)), action
        assert "Secret token" not in res.out


async def test_read_only_create_and_revoke_name_the_write_verb_they_lack(
        identity: MakeIdentity, kube_api: client.ApiClient, namespace: str) -> None:
    reader = await identity("reader", ["get"])
    common = ["--namespace", namespace, "--kubeconfig", reader.kubeconfig]

    # No Secret yet: creating it is a create, which RBAC never matches by name.
    res = await cli("create", "okta", *common)
    assert (res.code, res.err) == (1, reader.denied("create", namespace, named=False))

    _, okta = await tokens.create_token(kube_api, namespace, SECRET, "okta")
    listed = await cli("list", *common)
    assert listed.code == 0 and "okta" in listed.out, listed.err
    for action in (["create", "entra"], ["revoke", "okta"]):
        res = await cli(*action, *common)
        assert (res.code, res.err) == (1, reader.denied("update", namespace)), action
        assert "Secret token" not in res.out
    assert tokens.parse_token_secret(await read_secret(kube_api, namespace)) == {"okta": okta}


async def test_rights_on_the_token_secret_alone_are_enough(
        identity: MakeIdentity, kube_api: client.ApiClient, namespace: str) -> None:
    await tokens.create_token(kube_api, namespace, SECRET, "okta")  # e.g. made by the chart at install
    keeper = await identity("keeper", ["get", "update", "patch"])
    common = ["--namespace", namespace, "--kubeconfig", keeper.kubeconfig]

    created = await cli("create", "entra", *common)
    assert created.code == 0, created.err
    entra = token_from(created.out)
    listed = await cli("list", *common)
    assert listed.code == 0 and {"okta", "entra"} <= set(listed.out.split()), listed.err
    revoked = await cli("revoke", "okta", *common)
    assert revoked.code == 0, revoked.err
    assert tokens.parse_token_secret(await read_secret(kube_api, namespace)) == {"entra": entra}


async def test_rejected_credentials_are_one_line(kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    server, ca = chart.cluster_of(kubeconfig)
    forged = chart.write_token_kubeconfig(tmp_path / "forged", server=server, ca_pem=ca, token="not-a-token",
                                          namespace=namespace, user="forged")
    for action in (["list"], ["create"], ["revoke", "x"]):
        res = await cli(*action, "--namespace", namespace, "--kubeconfig", str(forged))
        assert res.code == 1, res
        assert res.err == (f'litellm-scim token: error: cannot get secrets "{SECRET}" in namespace {namespace}: '
                           "the cluster rejected the credentials (401 Unauthorized)\n")


# --- the Secret format the endpoint shares ---------------------------------------------------------


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_parse_accepts_raw_watch_objects_and_skips_unusable_entries() -> None:
    raw = {"metadata": {"name": SECRET}, "data": {
        "okta": _b64("scim_abc"), "from-file": _b64("scim_def\n"), "empty": _b64(""),
        "blank": _b64("  \n"), "garbage": "%%%not-base64", "binary": "/w==",
    }}
    assert tokens.parse_token_secret(raw) == {"okta": "scim_abc", "from-file": "scim_def"}
    assert tokens.parse_token_secret({"metadata": {}}) == {}
    assert tokens.parse_token_secret(None) == {}


def test_match_token_names_the_matching_token_only() -> None:
    known = {"okta": "scim_abc", "entra": "scim_def"}
    assert tokens.match_token("scim_def", known) == "entra"
    assert tokens.match_token("scim_de", known) is None
    assert tokens.match_token("", known) is None
    assert tokens.match_token("scim_abc", {}) is None


@pytest.mark.parametrize("name", ["a", "okta-2026.11", "A_b"])
def test_valid_names(name: str) -> None:
    tokens.check_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a/b", "a b", "x" * 64])
def test_invalid_names(name: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.check_name(name)



def test_token_infos_orders_by_creation_and_marks_hand_made_entries() -> None:
    raw = {"metadata": {"annotations": {
        "tokens.scim.litellm-operator.dev/new": "2026-11-29T10:00:00Z",
        "tokens.scim.litellm-operator.dev/old": "2026-01-01T00:00:00Z",
    }}, "data": {"new": _b64("scim_1"), "old": _b64("scim_2"), "by-hand": _b64("scim_3")}}
    assert tokens.token_infos(raw) == [
        tokens.TokenInfo("by-hand", None),
        tokens.TokenInfo("old", "2026-01-01T00:00:00Z"),
        tokens.TokenInfo("new", "2026-11-29T10:00:00Z"),
    ]
