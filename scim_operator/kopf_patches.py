"""Kopf 1.45 where it costs the operator at scale: two changes to Kopf's own private modules, each
applied once per process before ``kopf.operator`` starts, each checked against the pinned Kopf and
skipped with a warning when Kopf is not shaped as expected (the operator then runs as Kopf ships).
Kopf's pause state, the third, is captured in ``drift_sweep.watch``."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

log = logging.getLogger(__name__)


def quiet_toggle_sets() -> None:
    """Kopf's ToggleSets wake every waiter only when the set's state changes.

    While Kopf pre-populates the indexes at start-up, every object of an indexed kind (users, groups,
    member shards, policies) adds a toggle to one set, drops it once indexed, and waits on the set's
    shared condition until every object is indexed. Kopf 1.45 wakes all waiting objects on each add
    and drop, though the set's state changes once at the end: with N objects that is N² wake-ups
    (profiled: about 90 % of a restart's CPU at 3,000 users; at 10,000 users the initial listing did
    not finish in 30 minutes). A waiter waits for a state, so a change that leaves the state as it
    was has nobody to wake; turning a toggle on or off still wakes everyone, as in Kopf."""
    from kopf._cogs.aiokits import aiotoggles  # Kopf's own module; its API is pinned in the lock files

    if getattr(aiotoggles.ToggleSet, "_quiet", False):
        return
    probe = aiotoggles.ToggleSet(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "is_on", "make_toggle", "drop_toggles")):
        # Another Kopf than the pinned one: run as Kopf ships rather than patch what is not there.
        log.warning("Kopf's ToggleSet changed; start-up wake-ups left as Kopf has them")
        return

    async def make_toggle(self: Any, state: bool = False, *, name: str | None = None) -> Any:
        toggle = aiotoggles.Toggle(state, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: Any, toggle: Any) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggles(self: Any, toggles: Any) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    aiotoggles.ToggleSet.make_toggle = make_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggle = drop_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggles = drop_toggles  # type: ignore[method-assign]
    aiotoggles.ToggleSet._quiet = True  # type: ignore[attr-defined]


def lean_bodies() -> None:
    """Objects reach Kopf without ``metadata.managedFields``.

    The API server's field-ownership records are most of an object as Kopf decodes it (measured on
    the scale benchmark's objects: 9.7 of a ScimUser's 17.7 KB of dicts, 9.8 of a ScimGroup's 16.2),
    and nothing in Kopf or the operator reads them. While Kopf pre-populates the indexes at start-up
    it holds every listed object of every watched kind until the last one is indexed: all of those
    are smaller by that share. The objects are trimmed as they leave Kopf's
    list-and-watch stream, before Kopf queues, indexes or hands them to a handler."""
    from kopf._cogs.clients import watching  # Kopf's own module; its API is pinned in the lock files

    if getattr(watching, "_lean", False):
        return
    original = getattr(watching, "continuous_watch", None)
    if not inspect.isasyncgenfunction(original):
        log.warning("Kopf's watch stream changed; objects reach Kopf with their managedFields")
        return
    watching.continuous_watch = without_managed_fields(original)
    watching._lean = True  # type: ignore[attr-defined]


Stream = Callable[..., AsyncGenerator[Any, None]]


def without_managed_fields(stream: Stream) -> Stream:
    """``stream`` with ``managedFields`` dropped from the object of every event it yields."""

    async def lean(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(stream(*args, **kwargs)) as events:
            async for event in events:
                obj = event.get("object") if isinstance(event, dict) else None
                meta = obj.get("metadata") if isinstance(obj, dict) else None
                if isinstance(meta, dict):
                    meta.pop("managedFields", None)
                yield event

    return lean
