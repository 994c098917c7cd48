"""Drift checks of every ScimUser and every ScimGroup: one task per kind walks the directory once per
drift interval, spreading the checks evenly over it.

A Kopf daemon per resource did the same with a timer each, and cost about 12 KiB and 1.3 ms of
start-up CPU per resource (10,000 users: 117 MiB and 13 CPU s of a restart), for nothing but
sleeping. A pass holds the names only, and reads each resource's newest object from the operator's
copy (``Resources.latest``) when its turn comes. The checks of one pass run concurrently, up to a
bound, so the user checks due within the same second share one ``/user/list`` (``user_reads``).

Kopf stops daemons on a standby replica (peering); these tasks are not Kopf's, so they ask
``Activity`` before every check: a paused replica checks nothing, and after resuming it waits a
whole interval again, by which time Kopf's fresh listing has renewed the indexes and copies.

``Timetable`` does the same for the checks each resource wants at its own time (a group's key
rotations and the ends of key overlaps): a due time per name, one task running what is due."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# Checks of one pass in flight at once: more than one /user/list batch (100), so a second's worth of
# user checks at 100,000 users (333) waits for LiteLLM, not for this bound, only when LiteLLM is slow.
PARALLEL = 256


class Activity:
    """Whether Kopf lets this replica act: off while peering pauses it (a higher-priority peer is
    alive), always on when standalone.

    Kopf keeps that state in one private ``ToggleSet(any)`` it creates when it starts; ``watch``
    records it as it is created in this context. Without it (another Kopf than the pinned one), the
    replica counts as active, as a standalone one is, and says so once."""

    def __init__(self) -> None:
        self._paused: Any = None
        # A copy of the context Kopf runs resource handlers in: ``kopf.event`` posts Events through
        # a queue Kopf sets in that context only, and the sweeps' checks post DriftDetected & co.
        self.handler_context: contextvars.Context | None = None

    def remember_handler_context(self) -> None:
        """Called from a resource handler; the first call is kept."""
        if self.handler_context is None:
            self.handler_context = contextvars.copy_context()

    def active(self) -> bool:
        return self._paused is None or not self._paused.is_on()

    async def wait_active(self) -> None:
        if self._paused is not None:
            await self._paused.wait_for(False)


_capturing: contextvars.ContextVar[Activity | None] = contextvars.ContextVar("kopf_activity", default=None)


def watch(activity: Activity) -> None:
    """Record Kopf's pause state in ``activity`` when the operator started next in this context
    creates it (call before ``kopf.operator``)."""
    from kopf._cogs.aiokits import aiotoggles  # Kopf's own module; its API is pinned in the lock files

    if not getattr(aiotoggles.ToggleSet, "_activity", False):
        original = aiotoggles.ToggleSet.__init__

        def init(self: Any, fn: Any = all, *args: Any, **kwargs: Any) -> None:
            original(self, fn, *args, **kwargs)
            target = _capturing.get()
            if fn is any and target is not None:  # the one set of "pausing reasons" (running.py)
                target._paused = self

        aiotoggles.ToggleSet.__init__ = init  # type: ignore[method-assign]
        aiotoggles.ToggleSet._activity = True  # type: ignore[attr-defined]
    _capturing.set(activity)


def captured(activity: Activity) -> bool:
    return activity._paused is not None


async def sweep(
    activity: Activity,
    interval: Callable[[], float],
    names: Callable[[], Iterable[str]],
    check: Callable[[str], Awaitable[None]],
    *,
    kind: str,
    parallel: int = PARALLEL,
    walk: Callable[[list[str]], AsyncGenerator[str, None]] | None = None,
) -> None:
    """Forever: one pass over ``names()`` per ``interval()``, the first a whole interval after the
    start (a restart converges first; the resume handlers compared what matters). A pass goes in
    name order, or in the order ``walk(names)`` gives (each name once: the group checks follow
    LiteLLM's pages of teams)."""
    loop = asyncio.get_running_loop()
    bound = asyncio.Semaphore(parallel)
    running: set[asyncio.Task[None]] = set()

    async def one(name: str) -> None:
        try:
            await check(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one resource's failure never ends the sweep
            log.warning("drift check failed", extra={"fields": {"kind": kind, "name": name,
                                                                "error": f"{type(exc).__name__}: {exc}"}})
        finally:
            bound.release()

    try:
        due = loop.time() + interval()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not activity.active():
                await activity.wait_active()
                due = loop.time() + interval()
                continue
            period = interval()
            todo = sorted(names())
            start = loop.time()
            step = period / max(1, len(todo))
            order = walk(todo) if walk is not None else _each(todo)
            try:
                i = 0
                async for name in order:
                    wait = start + i * step - loop.time()
                    i += 1
                    if wait > 0.005:
                        await asyncio.sleep(wait)
                    if not activity.active():
                        break
                    await bound.acquire()
                    context = activity.handler_context
                    task = asyncio.create_task(one(name), name=f"drift {kind} {name}",
                                               context=None if context is None else context.copy())
                    running.add(task)
                    task.add_done_callback(running.discard)
            finally:
                await order.aclose()
            due = max(start + period, loop.time())
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _each(names: list[str]) -> AsyncGenerator[str, None]:
    for name in names:
        yield name


class Timetable:
    """When each resource's next timed check is due (a group's key rotation, the end of a key's
    overlap), and one task that runs the checks as they come due, up to ``parallel`` at once, only
    while the replica is active.

    It replaces a Kopf daemon per resource sleeping until its own next time: a name and a time per
    resource here, against a task, a live copy of the object and Kopf's daemon bookkeeping there.
    ``check`` returns the epoch its resource wants to be checked again at, or None for "nothing
    planned" (checked again after ``idle()`` seconds, as a backstop); a failed check is retried after
    ``retry`` seconds. A name is dropped when its time comes and ``exists`` says it is gone."""

    def __init__(
        self,
        activity: Activity,
        check: Callable[[str], Awaitable[float | None]],
        *,
        exists: Callable[[str], bool],
        idle: Callable[[], float],
        kind: str,
        parallel: int = 64,
        retry: float = 5.0,
    ) -> None:
        self._activity = activity
        self._check = check
        self._exists = exists
        self._idle = idle
        self._kind = kind
        self._parallel = parallel
        self._retry = retry
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._running: set[str] = set()
        self._changed = asyncio.Event()

    def at(self, name: str, when: float) -> None:
        """Check ``name`` at epoch ``when``, or earlier if it is already due earlier."""
        current = self._due.get(name)
        if current is not None and current <= when:
            return
        self._due[name] = when
        heapq.heappush(self._heap, (when, name))
        if self._heap[0] == (when, name):
            self._changed.set()

    def forget(self, name: str) -> None:
        self._due.pop(name, None)  # its heap entry is skipped when it comes up

    def due(self, name: str) -> float | None:
        return self._due.get(name)

    async def run(self) -> None:
        bound = asyncio.Semaphore(self._parallel)
        tasks: set[asyncio.Task[None]] = set()

        async def one(name: str) -> None:
            following: float | None
            try:
                following = await self._check(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one resource's failure never stops the others' timers
                log.warning("timed check failed", extra={"fields": {
                    "kind": self._kind, "name": name, "error": f"{type(exc).__name__}: {exc}"}})
                following = time.time() + self._retry
            finally:
                self._running.discard(name)
                bound.release()
            self.at(name, min(following if following is not None else math.inf, time.time() + self._idle()))

        try:
            while True:
                if not self._activity.active():
                    await self._activity.wait_active()
                    continue
                self._changed.clear()
                now = time.time()
                if not self._heap or self._heap[0][0] > now:
                    wait = self._heap[0][0] - now if self._heap else None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
                    continue
                when, name = heapq.heappop(self._heap)
                if self._due.get(name) != when:
                    continue  # moved earlier, or forgotten
                if name in self._running:  # due again while its check still runs: right after it
                    self._due.pop(name)
                    self.at(name, now + 0.2)
                    continue
                del self._due[name]
                if not self._exists(name):
                    continue
                await bound.acquire()
                self._running.add(name)
                context = self._activity.handler_context
                task = asyncio.create_task(one(name), name=f"timed {self._kind} {name}",
                                           context=None if context is None else context.copy())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
