"""Real `helm install/upgrade/rollback` against the test API server, and reading what Helm stores.

Two things stand between helm and the local API server kit, and both are bridged here without
touching what is under test (the chart, Helm's three-way merge, the live Secret):

- The kit serves no Deployments, Services, Ingresses, PodDisruptionBudgets or NetworkPolicies. A
  post-renderer (``--post-renderer``, a feature of helm itself) drops the documents of those kinds;
  the release then holds exactly what was applied.
- Helm keeps each release revision in a Secret ``sh.helm.release.v1.<release>.v<N>`` and, after
  applying, rewrites that Secret with an update that carries no resourceVersion (helm's storage
  driver builds a fresh object). kube-apiserver accepts such an unconditional update for Secrets;
  the kit stores Secrets as custom resources, whose updates must name a resourceVersion, so helm's
  bookkeeping fails there ("metadata.resourceVersion: Invalid value: 0: must be specified for an
  update"): the release stays "pending-install" and every later upgrade or rollback is refused.
  :class:`UnconditionalSecretUpdates` is a TLS proxy for helm alone that adds the Secret's current
  resourceVersion to such an update, which is what kube-apiserver does for an unconditional one.
  Every other request passes through unchanged. It is used only when :func:`needs_update_bridge`
  finds the API server refusing unconditional updates, so on a real cluster helm talks to it directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientSession, TCPConnector, web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from litellm_scim import chart, peers

# --- the post-renderer --------------------------------------------------------------------------


def write_post_renderer(directory: Path) -> Path:
    """An executable that keeps the documents of kinds the API server serves (chart.OBJECT_KINDS)."""
    script = directory / "keep-served-kinds"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\nimport yaml\n"
        f"KEEP = {sorted(chart.OBJECT_KINDS)!r}\n"
        "docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d.get('kind') in KEEP]\n"
        "sys.stdout.write(yaml.safe_dump_all(docs))\n")
    script.chmod(0o755)
    return script


# --- running helm ------------------------------------------------------------------------------


class HelmError(Exception):
    pass


class Helm:
    """The helm binary with one kubeconfig; ``run`` does not block the event loop (the bridge may
    be serving helm's requests from the same loop)."""

    def __init__(self, binary: Path, kubeconfig: str, home: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig
        home.mkdir(parents=True, exist_ok=True)
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    async def run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(self.binary), *args, "--kubeconfig", self.kubeconfig, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} exited with {proc.returncode}: {err.decode().strip()}")
        return out.decode()


# --- what Helm stores ----------------------------------------------------------------------------


def decode_release(stored: str) -> dict[str, Any]:
    """A release record as helm's Secret storage driver writes it: data.release is base64 (the API's)
    of base64 (helm's) of gzip of JSON."""
    inner = base64.b64decode(base64.b64decode(stored))
    if inner[:2] == b"\x1f\x8b":
        inner = gzip.decompress(inner)
    record: dict[str, Any] = json.loads(inner)
    return record


async def release_records(api: client.ApiClient, namespace: str, release: str) -> list[tuple[str, dict[str, Any]]]:
    """(raw data.release, decoded record) of every stored revision, oldest first."""
    listing = await client.CoreV1Api(api).list_namespaced_secret(
        namespace, label_selector=f"owner=helm,name={release}")
    found = [(s.metadata.name, s.data["release"]) for s in listing.items
             if s.metadata.name.startswith(f"sh.helm.release.v1.{release}.v")]
    records = [(raw, decode_release(raw)) for _, raw in found]
    return sorted(records, key=lambda r: int(r[1]["version"]))


# --- bridging helm's unconditional update of its release Secrets ----------------------------------


async def needs_update_bridge(api: client.ApiClient, namespace: str) -> bool:
    """Whether the API server refuses an update of a Secret without a resourceVersion (which
    kube-apiserver accepts), as helm's release bookkeeping sends it."""
    core = client.CoreV1Api(api)
    name = "unconditional-update-probe"
    await core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": {}})
    try:
        await core.replace_namespaced_secret(name, namespace, {"metadata": {"name": name}, "data": {"a": "YQ=="}})
        return False
    except ApiException as exc:
        if exc.status == 422 and "resourceVersion" in str(exc.body):
            return True
        raise
    finally:
        with contextlib.suppress(ApiException):
            await core.delete_namespaced_secret(name, namespace)


SECRET_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/secrets/[^/]+$")
# Not forwarded: connection-level headers, and the encoding of bodies (the proxy's own business).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
               "accept-encoding", "te", "upgrade", "proxy-authorization"}
PROTOBUF_MAGIC = b"k8s\x00"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _proto_fields(buf: bytes) -> list[tuple[int, bytes | None, bytes]]:
    """(field number, payload of a length-delimited field else None, the field's raw bytes)."""
    i, out = 0, []
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        number, wire_type = key >> 3, key & 7
        payload: bytes | None = None
        if wire_type == 0:
            _, i = _varint(buf, i)
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        elif wire_type == 2:
            length, i = _varint(buf, i)
            payload, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"protobuf wire type {wire_type} not expected in a Secret")
        out.append((number, payload, buf[start:i]))
    return out


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def with_resource_version(body: bytes, content_type: str, resource_version: str) -> bytes:
    """The Secret in ``body`` (JSON, or Kubernetes' protobuf envelope, which helm's client sends) with
    metadata.resourceVersion set. Protobuf: runtime.Unknown field 2 holds the v1.Secret, whose field 1
    is the ObjectMeta, whose field 6 is resourceVersion."""
    if "json" in content_type:
        doc = json.loads(body)
        doc.setdefault("metadata", {})["resourceVersion"] = resource_version
        return json.dumps(doc).encode()
    if not body.startswith(PROTOBUF_MAGIC):
        raise ValueError(f"cannot read a Secret sent as {content_type!r}")
    out = bytearray(PROTOBUF_MAGIC)
    for number, payload, raw in _proto_fields(body[len(PROTOBUF_MAGIC):]):
        if number != 2 or payload is None:
            out += raw
            continue
        secret = bytearray()
        for s_number, s_payload, s_raw in _proto_fields(payload):
            if s_number == 1 and s_payload is not None:
                meta = b"".join(m_raw for m_number, _, m_raw in _proto_fields(s_payload) if m_number != 6)
                secret += _length_delimited(1, meta + _length_delimited(6, resource_version.encode()))
            else:
                secret += s_raw
        out += _length_delimited(2, bytes(secret))
    return bytes(out)


def _has_resource_version(body: bytes, content_type: str) -> bool:
    if "json" in content_type:
        return bool(json.loads(body).get("metadata", {}).get("resourceVersion"))
    for number, payload, _ in _proto_fields(body[len(PROTOBUF_MAGIC):]):
        if number == 2 and payload is not None:
            for s_number, s_payload, _ in _proto_fields(payload):
                if s_number == 1 and s_payload is not None:
                    return any(n == 6 and p for n, p, _ in _proto_fields(s_payload))
    return False


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "bridge.crt", directory / "bridge.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class UnconditionalSecretUpdates:
    """The TLS proxy described in the module docstring. ``kubeconfig()`` is helm's way through it
    (client-go sends a bearer token only over TLS, hence the certificate)."""

    def __init__(self, kubeconfig: str, directory: Path) -> None:
        self.upstream, upstream_ca = chart.cluster_of(kubeconfig)
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        context = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == context["user"])
        if "token" not in user:
            raise RuntimeError(f"{kubeconfig}: the bridge passes bearer tokens only")
        self.token = str(user["token"])
        self.directory = directory
        self.upstream_ssl = ssl.create_default_context(cadata=upstream_ca)
        self.bridged: list[str] = []  # paths of the updates that were given a resourceVersion
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.port = 0

    async def start(self) -> str:
        cert, key = self_signed_certificate(self.directory)
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(str(cert), str(key))
        # Answers are decompressed here and passed on plain (Content-Encoding is not forwarded).
        self._session = ClientSession(connector=TCPConnector(ssl=self.upstream_ssl))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = peers.free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=serving).start()
        return str(chart.write_token_kubeconfig(
            self.directory / "helm.kubeconfig", server=f"https://127.0.0.1:{self.port}", ca_pem=cert.read_text(),
            token=self.token, namespace="default", user="helm"))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        content_type = request.headers.get("Content-Type", "")
        if (request.method == "PUT" and SECRET_PATH.match(request.path) and body
                and not _has_resource_version(body, content_type)):
            async with self._session.get(self.upstream + request.path, headers={
                    "Authorization": request.headers.get("Authorization", ""), "Accept": "application/json"}) as cur:
                if cur.status == 200:
                    current = await cur.json()
                    body = with_resource_version(body, content_type, current["metadata"]["resourceVersion"])
                    self.bridged.append(request.path)
        # No body, no Content-Type: aiohttp would otherwise send application/octet-stream, which the
        # API server answers with 406.
        async with self._session.request(request.method, self.upstream + request.raw_path, headers=headers,
                                         data=body or None) as answer:
            payload = await answer.read()
            out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=payload, headers=out_headers)
