"""Where Kopf keeps its bookkeeping, arranged so that handling a new object costs no write beyond
the operator's own status update.

Kopf's stock storages each add a request per handled object: the last handled spec (the
"essence" Kopf compares every event with, to tell a spec change from a status-only one) is a
second patch of the object or of its status, and the first progress record brands the object with
a marker annotation even when no progress is left to keep. During a bulk provisioning each of
those is one more write, one more watch event to every watcher and one more Kopf processing cycle
per object. Here the handler puts the essence into the status patch it makes anyway, Kopf's own
store() writes it only when that did not happen, and the marker is written only along with real
progress (a retry)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

# status.<FIELD> holds the JSON essence; the CRDs declare it.
FIELD = "handledConfiguration"


def _encode(essence: Any) -> str:
    return json.dumps(essence, separators=(",", ":"), sort_keys=True)


def _digest(encoded: str) -> bytes:
    # Remembered per object for the operator's lifetime: 16 bytes instead of the whole spec.
    return hashlib.blake2b(encoded.encode(), digest_size=16).digest()


class Progress(kopf.AnnotationsProgressStorage):
    """Kopf's progress annotations, without the marker when nothing else is written."""

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)
        metadata = patch.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        marker = f"{self.prefix}/kopf-managed"
        if set(annotations) == {marker}:
            del annotations[marker]
            del metadata["annotations"]
            if not metadata:
                del patch["metadata"]


class StatusDiffBase(kopf.AnnotationsDiffBaseStorage):
    """The essence in ``status.handledConfiguration``; objects handled by an older build still
    have it in Kopf's annotation, which is read (never written) as a fallback."""

    def __init__(self, *, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self.progress = Progress(prefix=prefix)
        # uid -> essence a handler is writing into the status in this cycle, for store() to skip.
        self._pending: dict[str, bytes] = {}
        # uid -> essence a handler's status write last recorded as handled.
        self._recorded: dict[str, bytes] = {}

    def fetch(self, *, body: kopf.Body) -> Any:
        encoded = (body.get("status") or {}).get(FIELD)
        if isinstance(encoded, str) and encoded:
            try:
                return json.loads(encoded)
            except ValueError:
                return None  # unreadable: handled as new, which the level-based handlers tolerate
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        encoded = _encode(essence)
        if self._pending.pop(_uid(body), None) == _digest(encoded):
            return
        patch.status[FIELD] = encoded

    def _canonical(self, essence: Any) -> str:
        # Cleared of progress the way Kopf clears both essences it compares.
        return _encode(self.progress.clear(essence=essence))

    def _essence(self, body: kopf.Body) -> str:
        # Built the way Kopf builds the essence it passes to store(); should the two ever differ,
        # store() writes its own and only the saved request is lost.
        return self._canonical(self.build(body=body))

    def handled(self, body: kopf.Body) -> dict[str, str]:
        """The status fields that record ``body`` as handled, for the handler's own status write.

        Only for a kind whose every cause runs a single handler, as the last fallible step of it:
        once written, Kopf sees no change left to handle or retry. Call ``recorded`` after the
        write succeeded."""
        new = self._essence(body)
        if self._is_handled(body, new):
            return {}  # nothing changed (a resume): Kopf will not call store()
        self._pending[_uid(body)] = _digest(new)
        return {FIELD: new}

    def is_handled(self, body: kopf.Body) -> bool:
        """Whether the status records ``body``'s very spec as handled: the last reconcile of it
        succeeded, and only something outside the spec (LiteLLM itself) can differ since."""
        return self._is_handled(body, self._essence(body))

    def _is_handled(self, body: kopf.Body, essence: str) -> bool:
        old = self.fetch(body=body)
        return old is not None and self._canonical(old) == essence

    def recorded(self, body: kopf.Body, fields: dict[str, str]) -> None:
        if FIELD in fields:
            self._recorded[_uid(body)] = _digest(fields[FIELD])

    def superseded(self, body: kopf.Body) -> bool:
        """True when ``body`` is a copy from before the handler's own status write of this very spec.

        Kopf no longer patches the object at the end of a cycle, so it has no newer version to wait
        for: a status write made while the handler ran (the intent record of a deactivation, another
        writer's) can reach it after the handler finished, still without the handled essence. There
        is nothing left to do for it; store() is told to skip."""
        new = _digest(self._essence(body))
        if self._recorded.get(_uid(body)) != new:
            return False
        self._pending[_uid(body)] = new
        return True

    def forget(self, body: kopf.Body) -> None:
        self._pending.pop(_uid(body), None)
        self._recorded.pop(_uid(body), None)


def _uid(body: kopf.Body) -> str:
    return str(body.get("metadata", {}).get("uid"))
