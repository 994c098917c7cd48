"""The operator's limit on LiteLLM calls in flight: urgent calls overtake queued bulk work."""

from __future__ import annotations

import asyncio

from scim_operator.priority import PrioritySlots


async def _hold(slots: PrioritySlots, priority: int, name: str, order: list[str], release: asyncio.Event) -> None:
    async with slots.slot(priority):
        order.append(name)
        await release.wait()


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    gate = asyncio.Event()
    first = asyncio.create_task(_hold(slots, 2, "running", order, gate))
    await asyncio.sleep(0)
    queued = []
    for name, prio in [("user-1", 2), ("user-2", 2), ("block-key", 0), ("team", 1), ("user-3", 2)]:
        queued.append(asyncio.create_task(_hold(slots, prio, name, order, gate)))
        await asyncio.sleep(0)
    assert order == ["running"]
    gate.set()
    await asyncio.gather(first, *queued)
    assert order == ["running", "block-key", "team", "user-1", "user-2", "user-3"]


async def test_never_more_in_flight_than_slots_and_cancelled_waiters_free_nothing() -> None:
    slots = PrioritySlots(3)
    in_flight = peak = 0

    async def work(priority: int) -> None:
        nonlocal in_flight, peak
        async with slots.slot(priority):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1

    tasks = [asyncio.create_task(work(i % 3)) for i in range(60)]
    await asyncio.sleep(0)
    for t in tasks[10:20]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3
    # Every slot came back: three more holders get in at once.
    holders = [asyncio.create_task(work(2)) for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*holders), 1)
