"""``litellm-scim dev``: the whole system on one machine with one command, for a newcomer.

Finds (or starts) a Kubernetes API server, installs the CRDs and the Helm chart's ServiceAccounts, Roles
and RoleBindings, makes sure there is a SCIM token, finds (or starts) a LiteLLM proxy, runs
``litellm-scim endpoint`` and ``litellm-scim operator`` as child processes under the chart's
ServiceAccounts (as installed, never with the caller's rights) and prints what an identity provider (or
curl) needs. Ctrl-C or SIGTERM stops the children and every server this command started, the LiteLLM
kit's PostgreSQL included; servers it found already running are left alone."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from litellm_scim import chart, peers
from scim_common import kube, tokens

DEV_TOKEN_NAME = "dev"  # noqa: S105 - the name of the token, not a token
RELEASE = "dev"  # the Helm release name the chart's objects are rendered for
# The processes' ServiceAccount tokens come from the TokenRequest API. The kubelet renews a pod's before
# they expire; nobody renews these, so ask for a day (a cluster may grant less: the expiry it granted is
# printed).
TOKEN_SECONDS = 24 * 3600
ADMIN_HINT = ("ask a cluster admin to grant it or use an admin kubeconfig "
              "(dev installs CRDs, a namespace and the chart's RBAC)")
READY_TIMEOUT = 90.0
STOP_GRACE = 10.0
LOG_TAIL = 25


class DevError(Exception):
    """Setup failed; the message says what and what to do."""


def say(message: str = "") -> None:
    print(message, flush=True)


@contextlib.contextmanager
def _progress(label: str, doing: str, stop: threading.Event, every: float = 10.0) -> Iterator[None]:
    """Print ``label`` now and a "still ..." line every few seconds until the block finishes, so a
    slow first start (LiteLLM installs itself, about 80 s) never looks like a hang.

    Ctrl-C meanwhile only sets ``stop``: the kits' scripts run in this terminal's process group, and a
    proxy or API server interrupted halfway would keep running unseen (or stay half-installed). So
    SIGINT is blocked while the block runs (the kits' processes inherit that) and taken here instead."""
    say(f"{label} ...")
    done = threading.Event()
    started = last = time.monotonic()
    in_main = threading.current_thread() is threading.main_thread()

    def tick() -> None:
        nonlocal last
        while not done.is_set():
            got = signal.sigtimedwait({signal.SIGINT}, 0.25) if in_main else done.wait(0.25)
            if got and in_main and not stop.is_set():
                say("Ctrl-C: stopping as soon as this step is done (interrupting it would leave processes behind)")
                stop.set()
            if time.monotonic() - last >= every and not done.is_set():
                last = time.monotonic()
                say(f"  ... still {doing} ({last - started:.0f} s)")

    if in_main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    ticker = threading.Thread(target=tick, daemon=True)  # inherits the blocked SIGINT and waits for it
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        if in_main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # like the servers themselves: connections of a previous run in TIME_WAIT do not block the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a local http URL we built
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if ``litellm-scim dev`` itself dies (even by SIGKILL),
    so no endpoint or operator outlives it. Linux only; elsewhere the orderly stop still applies."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def chart_values(namespace: str) -> dict[str, Any]:
    """Values for rendering the chart's RBAC. The LiteLLM URL and master-key Secret are placeholders
    the chart requires; dev passes the real ones to the operator itself."""
    return {
        "litellm": {"url": "http://litellm.invalid:4000", "masterKeySecret": {"name": "litellm-master"}},
        "scimTokens": {"secretName": tokens.DEFAULT_SECRET, "create": False},
        # Policies without secretNamespaces deliver their keys into the dev namespace itself.
        "operator": {"keySecretNamespaces": [namespace]},
    }


def _token_expiry(token: str) -> datetime | None:
    """When a ServiceAccount token (a JWT) expires, from its ``exp`` claim; None if it says nothing."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return None


@dataclass(frozen=True)
class Identity:
    """A process's identity: the chart's ServiceAccount for its component and a kubeconfig with its token."""

    user: str
    kubeconfig: Path
    expires: datetime | None


@dataclass(frozen=True)
class Setup:
    token: str  # the SCIM bearer token
    identities: dict[str, Identity]  # by component: endpoint, operator
    peering: str | None  # the KopfPeering the operator joins (None: standalone)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Dev:
    state_dir: Path
    namespace: str
    port: int
    stop_requested: threading.Event = field(default_factory=threading.Event)
    cluster: peers.KubeCluster | None = None
    litellm: peers.LiteLLM | None = None
    children: list[Child] = field(default_factory=list)

    # --- setup ---------------------------------------------------------------------------------

    def find_cluster(self) -> peers.KubeCluster:
        with _progress("Looking for a Kubernetes cluster (else starting a local API server)",
                       "looking for or starting a Kubernetes API server", self.stop_requested):
            try:
                cluster = peers.find_or_start_cluster(self.state_dir / "k8s")
            except subprocess.CalledProcessError as exc:
                raise DevError(f"the local API server did not start: {_last_line(exc.stderr)}") from None
            except RuntimeError as exc:
                raise DevError(str(exc)) from None
        self.cluster = cluster
        if cluster.started_here:
            say(f"Kubernetes: started a local API server at {cluster.server} (stopped again on exit)")
        else:
            say(f"Kubernetes: using {cluster.server} from {cluster.kubeconfig}")
        return cluster

    def find_litellm(self) -> peers.LiteLLM:
        if os.environ.get("LITELLM_URL"):
            label = "Connecting to LiteLLM from LITELLM_URL"
        else:
            label = ("Starting a local LiteLLM proxy with PostgreSQL (about 30 s; the very first time "
                     "about 80 s more to install it)")
        with _progress(label, "starting LiteLLM", self.stop_requested):
            try:
                litellm = peers.find_or_start_litellm()
            except subprocess.CalledProcessError as exc:
                raise DevError(f"the local LiteLLM proxy did not start: {_last_line(exc.stderr)}") from None
            except RuntimeError as exc:
                raise DevError(str(exc)) from None
        self.litellm = litellm
        if litellm.started_here:
            say(f"LiteLLM: started a local proxy at {litellm.url} (stopped again on exit)")
        else:
            say(f"LiteLLM: using {litellm.url}")
            if not _answers(f"{litellm.url}/health/liveliness", timeout=5.0):
                say(f"  warning: {litellm.url} does not answer yet; the operator will keep retrying")
        return litellm

    @contextlib.contextmanager
    def _refused(self, request: kube.Request) -> Iterator[None]:
        """Turn the API server's refusal of a setup step into one line naming what is missing.
        ``request`` describes the step for API servers whose 403 does not say what it refused."""
        try:
            yield
        except ApiException as exc:
            raise DevError(self._refusal(kube.refusal(exc, request), exc.status)
                           or f"cannot {request}: {kube.status_message(exc)}") from None
        except tokens.TokenError as exc:  # already one line, in the same terms
            raise DevError(self._refusal(str(exc), exc.status) or str(exc)) from None

    def _refusal(self, line: str | None, status: int | None) -> str | None:
        if status == 401:
            where = self.cluster.kubeconfig if self.cluster else "the kubeconfig"
            return (f"the cluster rejected the credentials in {where} (401 Unauthorized): "
                    "log in again or set KUBECONFIG to a kubeconfig that works")
        if status == 403 and line:
            return f"{line}: {ADMIN_HINT}"
        return None

    async def prepare_cluster(self, kubeconfig: str, docs: list[dict[str, Any]]) -> Setup:
        """With the caller's identity: CRDs, namespace, the chart's RBAC, the dev token, and one
        ServiceAccount kubeconfig per process. Nothing later uses the caller's identity."""
        api = await kube.api_client(kubeconfig)
        async with api:
            say("Installing the CRDs (Kopf's KopfPeering included) and the namespace ...")
            with self._refused(kube.Request("create", "customresourcedefinitions")):
                await chart.apply_crds(api)
            with self._refused(kube.Request("create", "namespaces")):
                await chart.ensure_namespace(api, self.namespace)
            say(f"Applying the chart's ServiceAccounts, Roles and RoleBindings (release {RELEASE!r}) ...")
            await self.apply_rbac(api, docs)
            peering = await self.ensure_peering(api, docs)
            with self._refused(kube.Request("get", "secrets", self.namespace, tokens.DEFAULT_SECRET)):
                token = await self.ensure_token(api)
            identities = await self.identities(api, docs, kubeconfig)
        return Setup(token, identities, peering)

    async def apply_rbac(self, api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
        for doc in chart.of_kinds(docs, chart.RBAC_KINDS):
            meta = doc["metadata"]
            # One object at a time, so a refusal names the object (ServiceAccount, Role, RoleBinding).
            with self._refused(kube.Request("create", doc["kind"].lower() + "s", meta.get("namespace"), meta["name"])):
                await chart.apply(api, [doc])
        with self._refused(kube.Request("create", "subjectaccessreviews")):
            await chart.wait_for_bindings(api, docs)

    async def ensure_peering(self, api: client.ApiClient, docs: list[dict[str, Any]]) -> str | None:
        """The chart's KopfPeering object, created when absent. Never replaced: its status holds the
        heartbeats of running operators (e.g. an installed one), and wiping them would let a standby
        believe it is alone."""
        found = chart.of_kinds(docs, ["KopfPeering"])
        if not found:
            return None
        name = str(found[0]["metadata"]["name"])
        with self._refused(kube.Request("create", "kopfpeerings", self.namespace)):
            try:
                await client.CustomObjectsApi(api).create_namespaced_custom_object(
                    "kopf.dev", "v1", self.namespace, "kopfpeerings", found[0])
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return name

    async def ensure_token(self, api: client.ApiClient) -> str:
        # Reusing the token across runs keeps an IdP configured against this setup working.
        existing = await tokens.read_tokens(api, self.namespace, tokens.DEFAULT_SECRET)
        if DEV_TOKEN_NAME in existing:
            say(f"SCIM token: reusing {DEV_TOKEN_NAME!r} from Secret {self.namespace}/{tokens.DEFAULT_SECRET}")
            return existing[DEV_TOKEN_NAME]
        _, token = await tokens.create_token(api, self.namespace, tokens.DEFAULT_SECRET, DEV_TOKEN_NAME)
        say(f"SCIM token: created {DEV_TOKEN_NAME!r} in Secret {self.namespace}/{tokens.DEFAULT_SECRET}")
        return token

    async def identities(self, api: client.ApiClient, docs: list[dict[str, Any]],
                         kubeconfig: str) -> dict[str, Identity]:
        """A TokenRequest token and a kubeconfig (0600, under the state dir) per component, as the
        kubelet gives a pod of the chart's Deployments."""
        try:
            server, ca = chart.cluster_of(kubeconfig)
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            raise DevError(f"cannot read the cluster's address and CA from {kubeconfig}: {exc}") from None
        folder = self.state_dir / "kubeconfigs"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        found: dict[str, Identity] = {}
        for component, account in sorted(chart.service_accounts(docs).items()):
            with self._refused(kube.Request("create", "serviceaccounts/token", self.namespace, account)):
                token = await chart.service_account_token(api, self.namespace, account, TOKEN_SECONDS)
            user = chart.service_account_user(self.namespace, account)
            path = chart.write_token_kubeconfig(folder / component, server=server, ca_pem=ca, token=token,
                                                namespace=self.namespace, user=user)
            found[component] = Identity(user, path, _token_expiry(token))
        return found

    # --- children ------------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str], identity: Identity) -> Child:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        out: IO[bytes] = log.open("wb")
        with out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "litellm_scim.cli", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                # own process group: a Ctrl-C in the terminal reaches only this command, which then
                # stops the children in order instead of racing them
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        say(f"{name}: pid {proc.pid} as {identity.user}, log {log}")
        return child

    def start_children(self, setup: Setup, litellm: peers.LiteLLM) -> tuple[Child, int]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_SCIM_")}
        base.pop("LITELLM_MASTER_KEY", None)
        endpoint, operator = setup.identities["endpoint"], setup.identities["operator"]
        self.spawn("endpoint", [
            "endpoint", *self._common(endpoint), "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(peers.free_port()), "--token-secret", tokens.DEFAULT_SECRET,
            "--base-url", self.tenant_url,
        ], {**base, "KUBECONFIG": str(endpoint.kubeconfig)}, endpoint)
        probe_port = peers.free_port()
        # Peering as the chart installs it: a second dev (or an installed operator) on the same
        # namespace stands by instead of fighting over LiteLLM.
        peering = ["--peering", setup.peering] if setup.peering else ["--standalone"]
        operator_env = {**base, "KUBECONFIG": str(operator.kubeconfig),
                        "LITELLM_MASTER_KEY": litellm.master_key}  # by environment, never argv
        child = self.spawn("operator", [
            "operator", *self._common(operator), "--litellm-url", litellm.url, "--probe-port", str(probe_port),
            "--metrics-port", str(peers.free_port()), *peering,
        ], operator_env, operator)
        return child, probe_port

    def _common(self, identity: Identity) -> list[str]:
        return ["--namespace", self.namespace, "--kubeconfig", str(identity.kubeconfig), "--log-format", "text"]

    def wait_ready(self, url: str, timeout: float = READY_TIMEOUT) -> bool:
        """True once ``url`` answers 2xx; False when a child died, a stop was requested or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            if self.dead_child() is not None:
                return False
            if _answers(url):
                return True
            self.stop_requested.wait(0.2)
        return False

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    @property
    def tenant_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    # --- running and stopping ------------------------------------------------------------------

    def main(self) -> int:
        if not _port_free(self.port):
            raise DevError(f"port {self.port} is already in use; pick another with --port")
        cluster = self.find_cluster()
        if self.stop_requested.is_set():
            return 0
        # The cluster first: a missing permission shows in seconds, not after LiteLLM's slow start.
        setup = self.set_up_cluster(cluster.kubeconfig)
        if self.stop_requested.is_set():
            return 0
        litellm = self.find_litellm()
        if self.stop_requested.is_set():
            return 0

        say("Starting the SCIM endpoint and the operator ...")
        operator, probe_port = self.start_children(setup, litellm)
        if not self.wait_ready(f"http://127.0.0.1:{self.port}/readyz"):
            return self.failed() if not self.stop_requested.is_set() else 0
        if not self.wait_ready(f"http://127.0.0.1:{probe_port}/healthz", timeout=30.0):
            if self.stop_requested.is_set():
                return 0
            if self.dead_child() is not None:
                return self.failed()
            say(f"  note: the operator's probe on port {probe_port} does not answer yet; see {operator.log}")

        self.banner(cluster, setup.token)
        while not self.stop_requested.wait(0.5):
            if self.dead_child() is not None:
                return self.failed()
        return 0

    def set_up_cluster(self, kubeconfig: str) -> Setup:
        try:
            docs = chart.render(chart_values(self.namespace), release=RELEASE, namespace=self.namespace)
            setup = asyncio.run(self.prepare_cluster(kubeconfig, docs))
        except chart.ChartError as exc:
            raise DevError(f"cannot render the Helm chart: {exc}") from None
        except subprocess.CalledProcessError as exc:  # installing helm from the kit failed
            raise DevError(f"cannot install helm: {_last_line(exc.stderr)}") from None
        except ApiException as exc:  # a step outside _refused
            raise DevError(f"the Kubernetes API refused a setup step: {kube.status_message(exc)}") from None
        except TimeoutError as exc:  # a CRD not established, RBAC not applied in time
            raise DevError(f"setting up the cluster timed out: {exc or 'no answer'}") from None
        except OSError as exc:
            raise DevError(f"cannot reach the Kubernetes API server: {exc}") from None
        self.report_identities(setup)
        return setup

    def report_identities(self, setup: Setup) -> None:
        for component, identity in sorted(setup.identities.items()):
            say(f"  {component} runs as {identity.user} (kubeconfig {identity.kubeconfig})")
        expiries = [i.expires for i in setup.identities.values() if i.expires is not None]
        if expiries:
            say(f"  their tokens expire at {min(expiries):%Y-%m-%d %H:%M} UTC: restart dev before then")

    def banner(self, cluster: peers.KubeCluster, token: str) -> None:
        kubectl = "kubectl"
        if cluster.kubeconfig != os.environ.get("KUBECONFIG"):
            kubectl = f"KUBECONFIG={shlex.quote(cluster.kubeconfig)} kubectl"
        user = ('{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],'
                '"userName":"alice@example.com","active":true}')
        say()
        say("litellm-scim is running.")
        say(f"  SCIM tenant URL: {self.tenant_url}")
        say(f"  Secret token:    {token}")
        say()
        say("Try it:")
        say(f"  export SCIM_URL={self.tenant_url} SCIM_TOKEN={token}")
        say('  curl -s -X POST "$SCIM_URL/Users" -H "Authorization: Bearer $SCIM_TOKEN" \\')
        say(f"       -H 'Content-Type: application/scim+json' -d '{user}'")
        say('  curl -s "$SCIM_URL/Users" -H "Authorization: Bearer $SCIM_TOKEN"')
        say(f"  {kubectl} -n {self.namespace} get scim")
        say()
        say(f"Logs: {self.state_dir / 'logs'}. Press Ctrl-C to stop.")

    def failed(self) -> int:
        child = self.dead_child()
        if child is None:
            say("The SCIM endpoint did not become ready in time; its last log lines:")
            child = self.children[0]
        else:
            say(f"{child.name} exited with code {child.proc.returncode}; its last log lines:")
        for line in child.tail().splitlines():
            say(f"  | {line}")
        return 1

    def shutdown(self) -> None:
        if self.children:
            say("Stopping the endpoint and the operator ...")
        for child in self.children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"  {child.name} did not stop within {STOP_GRACE:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        if self.litellm is not None and self.litellm.started_here:
            say("Stopping the local LiteLLM proxy ...")
            self.litellm.stop()
            # `down ROOT PORT` leaves the kit's PostgreSQL running; stop it too if this run started it.
            done = self.litellm.stop_postgres()
            if done:
                say(f"  {done}")
        if self.cluster is not None and self.cluster.started_here:
            say("Stopping the local API server ...")
            self.cluster.stop()
        say("Stopped.")


def _last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run(ns: argparse.Namespace) -> int:
    dev = Dev(state_dir=Path(ns.state_dir).resolve(), namespace=ns.namespace, port=int(ns.port))

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if not dev.stop_requested.is_set():
            say(f"\nReceived {signal.Signals(signum).name}; shutting down ...")
        dev.stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return dev.main()
    except DevError as exc:
        print(f"litellm-scim dev: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        dev.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
