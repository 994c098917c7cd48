"""The changes to Kopf's private modules (``kopf_patches``): objects reach Kopf without their
managedFields. The start-up wake-ups (``quiet_toggle_sets``) are tested in test_restart."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator
from typing import Any

from kopf._cogs.clients import watching

from scim_operator import kopf_patches

USER: dict[str, Any] = {
    "apiVersion": "scim.litellm.ai/v1alpha1",
    "kind": "ScimUser",
    "metadata": {
        "name": "u-1",
        "resourceVersion": "7",
        "annotations": {"a": "b"},
        "managedFields": [{"manager": "litellm-scim", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"userName": "ada@example.com"},
}


async def test_the_stream_yields_every_event_without_managed_fields_and_nothing_else_changed() -> None:
    closed: list[bool] = []

    async def stream(**kwargs: Any) -> AsyncGenerator[Any, None]:
        assert kwargs == {"resource": "scimusers"}
        try:
            yield {"type": None, "object": copy.deepcopy(USER)}
            yield watching.Bookmark.LISTED
            yield {"type": "MODIFIED", "object": copy.deepcopy(USER)}
            yield {"type": "DELETED", "object": {"metadata": {"name": "u-2"}}}
        finally:
            closed.append(True)

    events = [e async for e in kopf_patches.without_managed_fields(stream)(resource="scimusers")]
    lean = {**USER, "metadata": {k: v for k, v in USER["metadata"].items() if k != "managedFields"}}
    assert events == [
        {"type": None, "object": lean},
        watching.Bookmark.LISTED,
        {"type": "MODIFIED", "object": lean},
        {"type": "DELETED", "object": {"metadata": {"name": "u-2"}}},
    ]
    assert closed == [True]


async def test_a_consumer_that_stops_early_closes_the_stream_underneath() -> None:
    """Kopf stops a watch (pause, reconnect) by leaving the stream: the API request underneath must
    end then, not whenever the garbage collector finds it."""
    closed: list[bool] = []

    async def stream() -> AsyncGenerator[Any, None]:
        try:
            while True:
                yield {"type": "ADDED", "object": copy.deepcopy(USER)}
        finally:
            closed.append(True)

    events = kopf_patches.without_managed_fields(stream)()
    async for _ in events:
        break
    await events.aclose()
    assert closed == [True]


def test_kopf_lists_and_watches_through_the_lean_stream() -> None:
    """Applied to the pinned Kopf, the wrapped function is the one Kopf's endless watch calls, and a
    second application wraps nothing twice."""
    kopf_patches.lean_bodies()
    first = watching.continuous_watch
    kopf_patches.lean_bodies()
    assert watching.continuous_watch is first
    assert first.__qualname__.startswith("without_managed_fields")
    assert watching.infinite_watch.__globals__["continuous_watch"] is first
