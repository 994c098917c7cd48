"""Where a process's Python memory goes, for ``bench/operator_scale.py --memory-profile``.

On ``PYTHONPATH`` with ``SCIM_BENCH_MEMORY_REPORT=<file>`` set, on SIGUSR2 this writes to that file
a census of the live objects the garbage collector knows, by type (shallow bytes and count, largest
first; objects the collector does not track, such as strings, counted through the tracked objects
referring to them). It costs nothing until asked, so the run's timings stand.

With ``SCIM_BENCH_TRACE_FRAMES=N`` it also traces every allocation from the interpreter's start
(tracemalloc, N frames; the process runs many times slower, so its timings mean nothing) and adds
the live bytes by owner: the innermost frame in Kopf, in this project or in the Kubernetes client,
else the innermost frame of all."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from types import FrameType
from typing import Any

_REPORT = os.environ.get("SCIM_BENCH_MEMORY_REPORT")
_FRAMES = int(os.environ.get("SCIM_BENCH_TRACE_FRAMES", "0") or 0)
_OWNERS = ("/kopf/", "/scim_operator/", "/scim_common/", "/scim_contract/", "/kubernetes_asyncio/")


def _owner(trace: tracemalloc.Trace) -> str:
    frames = list(trace.traceback)  # oldest first
    for frame in reversed(frames):
        for marker in _OWNERS:
            if marker in frame.filename:
                return f"{marker.strip('/')}/{frame.filename.rsplit(marker, 1)[1]}:{frame.lineno}"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def _traced() -> dict[str, Any]:
    snapshot = tracemalloc.take_snapshot()
    size: Counter[str] = Counter()
    for trace in snapshot.traces:
        size[_owner(trace)] += trace.size
    packages: Counter[str] = Counter()
    for owner, n in size.items():
        packages[owner.split("/", 1)[0] if "/" in owner else "other"] += n
    return {"traced_bytes": sum(size.values()), "by_package": packages.most_common(),
            "by_owner": size.most_common(60)}


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _census() -> dict[str, Any]:
    gc.collect()
    objects = gc.get_objects()
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    seen: set[int] = set()
    for obj in objects:
        name = _type_name(obj)
        count[name] += 1
        size[name] += sys.getsizeof(obj)
        # What the collector does not track (strings, bytes, numbers, and containers holding only
        # such, which it stops tracking) is counted through whatever refers to it, once each.
        todo = [obj]
        while todo:
            for ref in gc.get_referents(todo.pop()):
                if not gc.is_tracked(ref) and id(ref) not in seen and not isinstance(ref, type):
                    seen.add(id(ref))
                    name = _type_name(ref) + " (untracked)"
                    count[name] += 1
                    size[name] += sys.getsizeof(ref)
                    if isinstance(ref, (dict, list, tuple, set, frozenset)):
                        todo.append(ref)
    # Large buffers by who holds them (a type, and the type owning that one's __dict__).
    holders: Counter[str] = Counter()
    for obj in objects:
        for ref in gc.get_referents(obj):
            if type(ref) is bytearray and sys.getsizeof(ref) > 16384:
                owner = _type_name(obj)
                if type(obj) is dict:
                    owner += " of " + ",".join(sorted({_type_name(r) for r in gc.get_referrers(obj)
                                                       if r is not objects and type(r) is not dict}))[:200]
                holders[owner] += sys.getsizeof(ref)
    del objects
    return {"by_type": [[n, size[n], count[n]] for n, _ in size.most_common(40)],
            "gc_objects": sum(count.values()), "buffers_by_holder": holders.most_common(10)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim() -> dict[str, float]:
    """RSS before and after handing the allocator's free pages back (glibc ``malloc_trim``)."""
    import ctypes

    before = _rss_mib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {"rss_mib_before_trim": round(before, 1), "rss_mib_after_trim": round(_rss_mib(), 1)}


def _report(_signum: int, _frame: FrameType | None) -> None:
    out: dict[str, Any] = {"trim": _trim(), "census": _census()}
    if _FRAMES:
        out.update(_traced())
    assert _REPORT is not None
    with open(_REPORT + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(_REPORT + ".tmp", _REPORT)


if _REPORT:
    if _FRAMES:
        tracemalloc.start(_FRAMES)
    signal.signal(signal.SIGUSR2, _report)
