"""Running a rendered Deployment's pod as a container, the way a kubelet would.

Everything comes from the rendered manifest: the container's command and args, its environment
(``secretKeyRef`` values read from the API server, ``fieldRef`` filled in), its ports, the pod's and
the container's securityContext (user, group, fsGroup, read-only root, capabilities, privilege
escalation, seccomp) and its emptyDir mounts. Like a kubelet, the runner mounts the ServiceAccount's
token (from the TokenRequest API), the cluster CA and the namespace at the standard path and sets
``KUBERNETES_SERVICE_HOST``/``PORT``, so the process uses in-cluster configuration. Each pod gets a
network namespace of its own (``podnet.py``), so two replicas listen on the same ports, as pods do."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import client

from litellm_scim import chart, peers

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PODNET = Path(__file__).with_name("podnet.py")


def engine() -> str | None:
    """podman, run as root: joining a named network namespace is what makes a container a pod here.
    On a fresh machine podman is not installed yet: the shared image kit beside the checkout (the
    one `scripts/image` builds with) installs it, so the install test runs there instead of skipping."""
    kit_base = peers.shared_dir() / "image-kit" / "base"
    if shutil.which("podman") is None and os.geteuid() == 0 and kit_base.is_file():
        subprocess.run([str(kit_base)], capture_output=True, check=False)
    found = shutil.which("podman")
    return found if found and os.geteuid() == 0 and shutil.which("ip") else None


def security_flags(pod_spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The container engine's flags for the securityContext of the pod and the container."""
    pod_sc, sc = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}
    merged = {**pod_sc, **sc}
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    assert uid is not None, "the chart must set runAsUser: the image's user is not what Kubernetes checks"
    if merged.get("runAsNonRoot"):
        assert int(uid) != 0, "runAsNonRoot with user 0 would not start"
    flags = [f"--user={uid}:{gid if gid is not None else uid}"]
    if pod_sc.get("fsGroup") is not None:
        flags.append(f"--group-add={pod_sc['fsGroup']}")
    if sc.get("readOnlyRootFilesystem"):
        # Only the declared emptyDir volumes are writable, not the engine's default tmpfs mounts.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    assert not sc.get("privileged"), "a privileged container is not what the chart promises"
    caps = sc.get("capabilities") or {}
    flags += [f"--cap-drop={c}" for c in caps.get("drop") or []]
    flags += [f"--cap-add={c}" for c in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    seccomp = (merged.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    else:
        assert seccomp in (None, "RuntimeDefault"), f"seccomp profile {seccomp} not supported here"
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"volume {mount['name']}: only emptyDir is emulated"
        size = (volume["emptyDir"] or {}).get("sizeLimit")
        opts = "rw,mode=1777" + (f",size={size.replace('Mi', 'm').replace('Gi', 'g')}" if size else "")
        flags += ["--tmpfs", f"{mount['mountPath']}:{opts}"]
    return flags


def host_flags() -> list[str]:
    """What the runner's host needs, not the pod: the container inherits this process's open-file and
    process limits (rootful podman asks for more than some hosts allow), and runc is preferred where
    installed (crun refuses some hosts' cgroup layouts)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile in (resource.RLIM_INFINITY, -1) else min(nofile, 1048576)
    nproc = 32768 if nproc in (resource.RLIM_INFINITY, -1) else min(nproc, 32768)
    flags = [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]
    if shutil.which("runc"):
        flags.append("--runtime=runc")
    return flags


async def resolve_env(container: dict[str, Any], *, pod_name: str, namespace: str,
                      core: client.CoreV1Api) -> dict[str, str]:
    """What the kubelet puts into the container's environment."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = await core.read_namespaced_secret(ref["name"], namespace)
            env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        else:
            raise AssertionError(f"the test cannot stand in for env source {source}")
    return env


@dataclass
class Pod:
    name: str
    deployment: dict[str, Any]
    ports: dict[str, int]  # container port name -> host port it is published on
    log: Path
    started: float
    proc: asyncio.subprocess.Process
    net: asyncio.subprocess.Process
    ready_after: float | None = None
    _out: Any = field(default=None, repr=False)

    @property
    def container(self) -> dict[str, Any]:
        result: dict[str, Any] = self.deployment["spec"]["template"]["spec"]["containers"][0]
        return result

    def url(self, port: str | int, path: str = "") -> str:
        name = port if isinstance(port, str) else next(
            p["name"] for p in self.container["ports"] if p["containerPort"] == port)
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait_probe(self, probe: str, within: float = 90.0) -> float:
        """Seconds from the container's start until its ``probe`` (startupProbe, readinessProbe, ...)
        answers 200."""
        http_get = self.container[probe]["httpGet"]
        url = self.url(http_get["port"], http_get["path"])
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not self.running():
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        self.ready_after = time.monotonic() - self.started
                        return self.ready_after
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name}: {url} not 200 within {within}s:\n{self.output()[-4000:]}")

    async def stop(self, grace: float | None = None) -> None:
        """As the kubelet deletes a pod: SIGTERM, the grace period, then SIGKILL; then its network."""
        pod_spec = self.deployment["spec"]["template"]["spec"]
        grace = float(pod_spec.get("terminationGracePeriodSeconds", 30)) if grace is None else grace
        if self.running():
            stop = await asyncio.create_subprocess_exec(
                engine() or "podman", "stop", "-t", str(int(grace)), self.name,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await stop.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace + 10)
        if self.net.returncode is None:
            self.net.terminate()
            await self.net.wait()
        if self._out is not None:
            self._out.close()
            self._out = None


async def start_pod(deployment: dict[str, Any], *, image: str, admin: client.ApiClient, kubeconfig: str,
                    reach: list[int], work: Path) -> Pod:
    """Start one pod of the rendered Deployment: its ServiceAccount's token, CA and namespace mounted
    where Kubernetes mounts them, the Service of the API server and ``reach`` ports reachable inside."""
    podman = engine()
    assert podman, "needs podman as root"
    meta, pod_spec = deployment["metadata"], deployment["spec"]["template"]["spec"]
    namespace = meta["namespace"]
    name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
    (container,) = pod_spec["containers"]
    core = client.CoreV1Api(admin)
    server, ca = chart.cluster_of(kubeconfig)
    api_port = int(server.rsplit(":", 1)[1])

    # The projected ServiceAccount volume: group-readable by fsGroup, as the kubelet writes it.
    sa_dir = work / name / "serviceaccount"
    sa_dir.mkdir(parents=True)
    if pod_spec.get("automountServiceAccountToken", True):
        token = await chart.service_account_token(admin, namespace, pod_spec["serviceAccountName"], seconds=3600)
        group = int((pod_spec.get("securityContext") or {}).get("fsGroup") or 0)
        for file, content in (("token", token), ("ca.crt", ca), ("namespace", namespace)):
            (sa_dir / file).write_text(content)
            os.chown(sa_dir / file, 0, group)
            os.chmod(sa_dir / file, 0o440)
        os.chown(sa_dir, 0, group)
        os.chmod(sa_dir, 0o750)  # noqa: S103 - the fsGroup must read the token, as in a pod
        os.chmod(sa_dir.parent, 0o755)  # noqa: S103 - the container's user must reach the mount

    env = await resolve_env(container, pod_name=name, namespace=namespace, core=core)
    env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api_port))
    ports = {p["name"]: peers.free_port() for p in container.get("ports", [])}
    by_name = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

    netns = f"lso-{uuid.uuid4().hex[:8]}"
    net = await asyncio.create_subprocess_exec(
        sys.executable, str(PODNET), netns,
        *(f"--publish={ports[n]}:{by_name[n]}" for n in ports), *(f"--reach={p}" for p in [api_port, *reach]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert net.stdout is not None
    line = await asyncio.wait_for(net.stdout.readline(), 10)
    assert line.strip() == b"ready", f"pod network: {line!r}"

    argv = [
        podman, "run", "--rm", "--name", name, f"--network=ns:/run/netns/{netns}", "--pull=never",
        *security_flags(pod_spec, container), *host_flags(),
        "-v", f"{sa_dir}:{SA_MOUNT}:ro",
        # Values travel in the engine's environment, never its argv (the master key is one of them).
        *(f"--env={k}" for k in env),
        f"--entrypoint={json.dumps(container['command'][:1])}", image, *container["command"][1:],
        *container.get("args", []),
    ]
    log = work / f"{name}.log"
    out = log.open("wb")
    proc = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **env}, stdout=out,
                                                stderr=asyncio.subprocess.STDOUT)
    return Pod(name=name, deployment=deployment, ports=ports, log=log, started=time.monotonic(), proc=proc,
               net=net, _out=out)
