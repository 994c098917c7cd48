"""Finding or starting the two peers the system needs: a Kubernetes API server and a LiteLLM proxy.

Used by ``litellm-scim dev``, the test fixtures and the benchmarks. An existing cluster (a kubeconfig
that answers) and an existing LiteLLM (``LITELLM_URL``) always win; otherwise the local kits in the
``shared`` folder beside the checkout are started (override with ``LITELLM_SCIM_SHARED``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("LITELLM_SCIM_SHARED", REPO.parent / "shared")).resolve()


def free_port(span: int = 0) -> int:
    """A free TCP port P on 127.0.0.1 such that P + span is free too (the API server kit also uses
    P+17000 and P+17001 for etcd)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if span and port + span >= 65535:
            continue
        if not span or all(_is_free(port + extra) for extra in (17000, 17001)):
            return port
    raise RuntimeError("no free port found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _exports(output: str) -> dict[str, str]:
    """Parse the ``export A=1 B=2`` line the kits print last."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("export "):
            pairs = shlex.split(line[len("export "):])
            return dict(p.split("=", 1) for p in pairs)
    raise RuntimeError(f"no export line in: {output[-500:]}")


@dataclass
class KubeCluster:
    kubeconfig: str
    started_here: bool
    state_dir: Path | None = None
    server: str = ""

    def stop(self) -> None:
        if self.started_here and self.state_dir is not None:
            subprocess.run([str(shared_dir() / "k8s-testserver" / "down"), str(self.state_dir)],
                           check=False, capture_output=True)


def kubeconfig_answers(path: str, timeout: float = 3.0) -> str | None:
    """The server URL if the kubeconfig's current cluster answers /version, else None."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        server = cluster["server"].rstrip("/")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only asks "is anybody there"; the real client verifies
        req = urllib.request.Request(f"{server}/version")  # noqa: S310
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
            resp.read()
        return str(server)
    except urllib.error.HTTPError:
        return str(server)  # 401/403 still means a server is there
    except Exception:
        return None


def find_or_start_cluster(state_dir: Path, *, prefer: str | None = None) -> KubeCluster:
    """Use ``prefer``/$KUBECONFIG/~/.kube/config when it answers, else start the local API server."""
    candidates = [prefer, os.environ.get("KUBECONFIG"), str(Path.home() / ".kube" / "config")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            server = kubeconfig_answers(candidate)
            if server:
                return KubeCluster(kubeconfig=candidate, started_here=False, server=server)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(span=17001)
    up = shared_dir() / "k8s-testserver" / "up"
    if not up.exists():
        raise RuntimeError(f"no cluster answers and no local API server kit at {up}: set KUBECONFIG")
    out = subprocess.run([str(up), str(state_dir), str(port)], check=True, capture_output=True, text=True)
    kubeconfig = _exports(out.stdout)["KUBECONFIG"]
    return KubeCluster(kubeconfig=kubeconfig, started_here=True, state_dir=state_dir,
                       server=f"https://127.0.0.1:{port}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process, but a live one
    return True


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def postgres_running(root: Path) -> bool:
    """Whether the LiteLLM kit's PostgreSQL server of ``root`` runs: the same test as ``pg ROOT start``
    makes (``pg_ctl status`` reads the postmaster.pid of the data directory and asks if it lives)."""
    pid = _pid_in(root / "pg" / "data" / "postmaster.pid")
    return pid is not None and _alive(pid)


def proxies_running(root: Path) -> list[int]:
    """Ports of the live proxies the kit started under ``root`` (each has a proxy-PORT.pid)."""
    ports = []
    for pidfile in sorted(root.glob("proxy-*.pid")):
        pid = _pid_in(pidfile)
        if pid is not None and _alive(pid):
            ports.append(int(pidfile.stem.removeprefix("proxy-")))
    return ports


@dataclass
class LiteLLM:
    url: str
    master_key: str = field(repr=False)
    started_here: bool
    root: Path | None = None
    port: int | None = None
    # Whether the `up` that started this proxy also started the kit's PostgreSQL server (it was not
    # running before). `down ROOT PORT` stops only the proxy; see stop_postgres.
    started_postgres: bool = False

    def stop(self) -> None:
        if self.started_here and self.root is not None:
            subprocess.run([str(shared_dir() / "litellm-peer" / "down"), str(self.root), str(self.port)],
                           check=False, capture_output=True)

    def stop_postgres(self) -> str | None:
        """Stop the kit's PostgreSQL server after ``stop()``, if starting this proxy started it and no
        other proxy of the same ROOT uses it now (a test session may have come to share it meanwhile).
        Returns what happened, for the person at the terminal; None when there was nothing to do."""
        if not (self.started_here and self.started_postgres and self.root is not None):
            return None
        if not postgres_running(self.root):
            return None
        others = [p for p in proxies_running(self.root) if p != self.port]
        if others:
            return (f"left PostgreSQL of {self.root} running: the proxies on port "
                    f"{', '.join(map(str, others))} use it too")
        subprocess.run([str(shared_dir() / "litellm-peer" / "pg"), str(self.root), "stop"],
                       check=False, capture_output=True)
        if postgres_running(self.root):
            pg = shared_dir() / "litellm-peer" / "pg"
            return f"PostgreSQL of {self.root} did not stop; stop it with: {pg} {self.root} stop"
        return f"stopped PostgreSQL of {self.root}"

    def restart(self) -> None:
        """Start a stopped local proxy again on the same port and database (for outage tests)."""
        if not self.started_here or self.root is None:
            raise RuntimeError("only a proxy started here can be restarted")
        _start_proxy(self.root, int(self.port or 0), fresh=False)


def _start_proxy(root: Path, port: int, *, fresh: bool = True) -> dict[str, str]:
    kit = shared_dir() / "litellm-peer"
    env = dict(os.environ)
    if fresh:
        out = subprocess.run([str(kit / "up"), str(root), str(port)], check=True, capture_output=True,
                             text=True, env=env)
        return _exports(out.stdout)
    # `up` recreates the database; to keep the data, start the proxy the way `up` does, minus the DB.
    script = (
        f'. "{kit}/env.sh" "{root}"; export DATABASE_URL=postgresql://postgres@127.0.0.1:'
        f'${{LITELLM_PEER_PGPORT:-55432}}/litellm_{port}; '
        f'export LITELLM_MASTER_KEY=${{LITELLM_MASTER_KEY:-sk-peer-master-0123456789abcdef}}; '
        f'setsid "{root}/venv/bin/litellm" --config "{kit}/config.yaml" --host 127.0.0.1 --port {port} '
        f'> "{root}/proxy-{port}.log" 2>&1 < /dev/null & echo $! > "{root}/proxy-{port}.pid"'
    )
    subprocess.run(["bash", "-c", script], check=True, env=env)
    return {}


def find_or_start_litellm(root: Path | None = None) -> LiteLLM:
    """Use $LITELLM_URL/$LITELLM_MASTER_KEY when set, else start the local LiteLLM proxy kit."""
    url = os.environ.get("LITELLM_URL")
    if url:
        key = os.environ.get("LITELLM_MASTER_KEY")
        if not key:
            raise RuntimeError("LITELLM_URL is set but LITELLM_MASTER_KEY is not")
        return LiteLLM(url=url.rstrip("/"), master_key=key, started_here=False)
    root = root or Path(os.environ.get("LITELLM_PEER_ROOT", "/var/tmp/litellm-peer"))  # noqa: S108
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # `up` starts PostgreSQL unless it already runs; only one it started may be stopped again.
    started_postgres = not postgres_running(root)
    try:
        env = _start_proxy(root, port)
    except Exception:
        # A failed `up` may leave its PostgreSQL server or a proxy that never became ready behind.
        partial = LiteLLM(url="", master_key="", started_here=True, root=root, port=port,
                          started_postgres=started_postgres)
        partial.stop()
        partial.stop_postgres()
        raise
    return LiteLLM(url=env["LITELLM_URL"], master_key=env["LITELLM_MASTER_KEY"], started_here=True,
                   root=root, port=port, started_postgres=started_postgres)


def wait_http(url: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=2):  # noqa: S310
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def kube_clis(bin_dir: Path | None = None) -> Path:
    """Directory holding ``kubectl`` and ``helm``: from PATH when present, else installed by the kit."""
    import shutil

    if shutil.which("kubectl") and shutil.which("helm"):
        return Path(shutil.which("kubectl") or "").parent
    bin_dir = bin_dir or Path.home() / ".cache" / "litellm-scim" / "bin"
    subprocess.run([str(shared_dir() / "tools" / "kube-clis"), str(bin_dir)], check=True, capture_output=True)
    return bin_dir
