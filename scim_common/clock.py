"""Time stamps as Kubernetes and SCIM write them: RFC 3339 in UTC with a ``Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def rfc3339(epoch: float | None = None, *, millis: bool = False) -> str:
    """``2026-12-02T11:34:57Z`` (``.123Z`` with ``millis``) for ``epoch`` seconds, default now."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def parse(value: str | None) -> datetime | None:
    """The moment an RFC 3339 time names (``Z`` or an offset), or None for anything else."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def epoch(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 time; ValueError when it is none."""
    moment = parse(value)
    if moment is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    return moment.timestamp()
