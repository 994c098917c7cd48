"""The provisioning audit trail: one log line per SCIM write, and the same as a Kubernetes Event on the
user or group written, so ``kubectl describe scimuser`` shows who provisioned what and when.

"Who" is the NAME of the bearer token the request carried (the key in the token Secret), never its
value. The log line is written before the response leaves; the Event is sent by a background task
from a bounded queue, so a slow or unavailable API server never adds latency to a SCIM write (the
write latency is what identity providers time out on). When the queue is full the Event is dropped
and counted (``scim_audit_events_dropped``); the log line is always there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry, Counter

from scim_common import clock
from scim_contract import API_VERSION
from scim_endpoint.resources import ResourceType
from scim_endpoint.store import Store

log = logging.getLogger("scim_endpoint.audit")

# The Events waiting to be sent; past this many the newest are dropped (and counted).
QUEUE_SIZE = 1000
COMPONENT = "litellm-scim-endpoint"
_REASONS = {"POST": "Provisioned", "PUT": "Updated", "PATCH": "Updated", "DELETE": "Deprovisioned"}
_DONE = {"POST": "created", "PUT": "replaced", "PATCH": "patched", "DELETE": "deleted"}


@dataclass(frozen=True)
class Write:
    """One SCIM write as the audit trail records it."""

    token: str | None  # the matched token's name; None when no token matched (a 401)
    method: str
    rt: ResourceType
    id: str | None  # None for a create that was refused
    name: str | None  # userName or displayName
    status: int
    scim_type: str | None = None
    uid: str | None = None  # the custom resource's uid, when known before the write (a delete)

    @property
    def reason(self) -> str:
        if self.status >= 500:
            return "Failed"
        return _REASONS[self.method] if self.status < 400 else "Refused"

    def message(self) -> str:
        who = f"token {self.token!r}" if self.token else "an unauthenticated request"
        what = f"{self.rt.name} {self.name!r}" if self.name else self.rt.name
        if self.status < 400:
            return f"{self.method} by {who}: {what} {_DONE[self.method]} ({self.status})"
        refused = f"{self.status} {self.scim_type}" if self.scim_type else str(self.status)
        return f"{self.method} by {who}: {what} refused ({refused})"


_PLAIN = re.compile(r"[A-Za-z0-9@._:/+-]+")


def _logfmt(value: Any) -> str:
    """A value of a key=value message: as is when plain, else JSON-quoted (so a userName with spaces,
    quotes or a line break stays one value on one line)."""
    text = "-" if value is None else str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class Audit:
    """Records SCIM writes: the log line at once, the Event through ``events`` (None: log only)."""

    def __init__(self, store: Store, api: client.ApiClient | None = None, *,
                 registry: CollectorRegistry | None = None, queue_size: int = QUEUE_SIZE) -> None:
        self.store = store
        self._events = client.CoreV1Api(api) if api is not None else None
        self._queue: asyncio.Queue[Write] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        # Its own registry unless given the endpoint's: several apps can share a process (tests).
        registry = registry if registry is not None else CollectorRegistry()
        self.dropped = Counter("scim_audit_events_dropped", "Audit Events dropped because their queue was full",
                               registry=registry)
        self.failed = Counter("scim_audit_events_failed", "Audit Events the API server did not accept",
                              registry=registry)

    @property
    def events(self) -> bool:
        return self._events is not None

    def record(self, write: Write) -> None:
        fields: dict[str, Any] = {
            "token": write.token, "method": write.method, "resourceType": write.rt.name, "id": write.id,
            write.rt.unique: write.name, "status": write.status}
        if write.scim_type:
            fields["scimType"] = write.scim_type
        # The fields twice: structured for the JSON format, and as key=value in the message so the
        # text format carries them too.
        log.info("SCIM write %s", " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items()),
                 extra={"fields": fields})
        if self._events is None or write.id is None or write.token is None:
            # Log only: no Events asked for, nothing in the cluster to attach one to, or a caller
            # without a token (who must not be able to fill the namespace with Events).
            return
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            self.dropped.inc()

    def start(self) -> None:
        if self._events is not None and self._task is None:
            self._task = asyncio.create_task(self._send_all(), name="audit-events")

    async def stop(self) -> None:
        """Sends what is queued (briefly), then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def drained(self) -> None:
        await self._queue.join()

    async def _send_all(self) -> None:
        while True:
            write = await self._queue.get()
            try:
                await self._send(write)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The type only: an API error's text would repeat the request.
                self.failed.inc()
                log.warning("could not record the audit Event of %s %s %s: %s %s", write.method, write.rt.name,
                            write.id, type(exc).__name__, getattr(exc, "status", ""))
            finally:
                self._queue.task_done()

    async def _send(self, write: Write) -> None:
        assert self._events is not None and write.id is not None
        uid = write.uid
        if uid is None:
            rec = self.store.get(write.rt.collection, write.id) or await self.store.load(write.rt.collection, write.id)
            uid = rec.obj["metadata"].get("uid") if rec is not None else None
        if not uid:
            return  # a refused write on a resource that does not exist: nothing to describe
        now = clock.rfc3339()
        involved: dict[str, Any] = {"apiVersion": API_VERSION, "kind": write.rt.collection.kind.kind,
                                    "name": write.id, "namespace": self.store.namespace,
            "uid": uid}
        body: Any = {
            "apiVersion": "v1", "kind": "Event",
            # Named as client-go's recorder names Events: the object's name and the time in hex.
            "metadata": {"name": f"{write.id}.{time.time_ns():x}", "namespace": self.store.namespace},
            "involvedObject": involved,
            "reason": write.reason, "message": write.message(),
            "type": "Normal" if write.status < 400 else "Warning",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        await self._events.create_namespaced_event(self.store.namespace, body)
