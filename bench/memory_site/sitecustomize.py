"""Where a process's Python memory goes, for ``bench/operator_scale.py --memory-profile``.

On ``PYTHONPATH`` with ``SCIM_BENCH_MEMORY_REPORT=<file>`` set, this traces every allocation from
the interpreter's start (tracemalloc, 12 frames: slow, so timings of such a run mean nothing) and,
on SIGUSR2, writes to that file the live bytes grouped by owner: the innermost frame in Kopf, in
this project or in the Kubernetes client, else the innermost frame of all. JSON: a list of
``[owner, bytes, blocks]``, largest first."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from collections import Counter
from types import FrameType

_REPORT = os.environ.get("SCIM_BENCH_MEMORY_REPORT")
_OWNERS = ("/kopf/", "/scim_operator/", "/scim_common/", "/scim_contract/", "/kubernetes_asyncio/")


def _owner(trace: tracemalloc.Trace) -> str:
    frames = list(trace.traceback)  # oldest first
    for frame in reversed(frames):
        for marker in _OWNERS:
            if marker in frame.filename:
                return f"{marker.strip('/')}/{frame.filename.rsplit(marker, 1)[1]}:{frame.lineno}"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def _report(_signum: int, _frame: FrameType | None) -> None:
    snapshot = tracemalloc.take_snapshot()
    size: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for trace in snapshot.traces:
        owner = _owner(trace)
        size[owner] += trace.size
        count[owner] += 1
    rows = [[owner, n, count[owner]] for owner, n in size.most_common(60)]
    packages: Counter[str] = Counter()
    for owner, n in size.items():
        packages[owner.split("/", 1)[0] if "/" in owner else "other"] += n
    assert _REPORT is not None
    with open(_REPORT + ".tmp", "w") as out:
        json.dump({"traced_bytes": sum(size.values()), "by_package": packages.most_common(),
                   "by_owner": rows}, out)
    os.replace(_REPORT + ".tmp", _REPORT)


if _REPORT:
    tracemalloc.start(12)
    signal.signal(signal.SIGUSR2, _report)
