"""The drift sweeps: one pass over every resource per interval, spread over it, nothing while Kopf
pauses the replica (peering), and the resource copies they read from; the timetable of checks each
resource wants at its own time (a group's key rotations and overlap ends). The sweeps end to end (drift
found and corrected, the standby quiet) run in test_users, test_groups and test_peering."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from kopf._cogs.aiokits import aiotoggles
from kubernetes_asyncio import client

from scim_contract import USER
from scim_operator import drift_sweep
from scim_operator.drift_sweep import Activity
from scim_operator.resources import Resources, pack, unpack


class _Checks:
    def __init__(self, fail: set[str] | None = None, hold: float = 0.0) -> None:
        self.seen: list[tuple[float, str]] = []
        self.fail = fail or set()
        self.hold = hold
        self.in_flight = 0
        self.most = 0

    async def __call__(self, name: str) -> None:
        self.seen.append((asyncio.get_running_loop().time(), name))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
            if name in self.fail:
                raise RuntimeError("LiteLLM said no")
        finally:
            self.in_flight -= 1


async def _run_for(seconds: float, *args: Any, **kwargs: Any) -> None:
    task = asyncio.create_task(drift_sweep.sweep(*args, **kwargs))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_each_resource_is_checked_once_per_interval_spread_over_it() -> None:
    checks = _Checks()
    names = [f"u{i:02d}" for i in range(20)]
    start = asyncio.get_running_loop().time()
    await _run_for(1.75, Activity(), lambda: 0.5, lambda: names, checks, kind="user")
    times = [t - start for t, _ in checks.seen]
    # Passes at 0.5, 1.0 and 1.5 s, each in name order; the third is cut off.
    assert [n for _, n in checks.seen][:40] == names + names
    assert min(times) >= 0.5  # the first pass one interval after the start, as after a restart
    first = times[:20]
    assert first[-1] - first[0] >= 0.4  # spread over the interval, not all at once
    # The second pass starts one interval after the first (a pass that waited a whole interval
    # before starting would check each resource every second interval only).
    assert 0.95 <= times[20] <= 1.3


async def test_a_failing_check_does_not_end_the_sweep() -> None:
    checks = _Checks(fail={"u1"})
    await _run_for(0.88, Activity(), lambda: 0.3, lambda: ["u0", "u1", "u2"], checks, kind="user")
    assert [n for _, n in checks.seen] == ["u0", "u1", "u2", "u0", "u1", "u2"]


async def test_a_pass_may_follow_another_order_and_each_pass_asks_for_it_again() -> None:
    checks = _Checks()
    walks: list[list[str]] = []
    closed: list[bool] = []

    async def backwards(names: list[str]) -> AsyncGenerator[str, None]:
        walks.append(names)
        try:
            for name in reversed(names):
                yield name
        finally:
            closed.append(True)

    await _run_for(0.88, Activity(), lambda: 0.3, lambda: ["u1", "u0", "u2"], checks, kind="group", walk=backwards)
    assert [n for _, n in checks.seen] == ["u2", "u1", "u0", "u2", "u1", "u0"]
    assert walks == [["u0", "u1", "u2"]] * 2 and closed == [True, True]


async def test_checks_in_flight_are_bounded_and_cancelled_with_the_sweep() -> None:
    checks = _Checks(hold=10.0)
    names = [f"u{i}" for i in range(50)]
    await _run_for(0.4, Activity(), lambda: 0.1, lambda: names, checks, kind="user", parallel=8)
    assert checks.most == 8
    await asyncio.sleep(0)
    assert checks.in_flight == 0  # the sweep's end cancelled the checks it started


async def test_a_paused_replica_checks_nothing_and_waits_an_interval_after_resuming() -> None:
    activity = Activity()
    drift_sweep.watch(activity)
    paused = aiotoggles.ToggleSet(any)  # as Kopf creates its pause state when it starts
    assert drift_sweep.captured(activity)
    peering = await paused.make_toggle(True, name="a higher-priority peer")
    checks = _Checks()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(drift_sweep.sweep(activity, lambda: 0.2, lambda: ["u0", "u1"], checks, kind="user"))
    await asyncio.sleep(0.6)
    assert checks.seen == []  # three intervals paused: not one check
    resumed = loop.time()
    await peering.turn_to(False)
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert checks.seen and min(t for t, _ in checks.seen) >= resumed + 0.2


async def _peered(*, paused: bool) -> tuple[Activity, Any]:
    """An Activity that captured a pause state as Kopf creates it, and the peering toggle in it."""
    activity = Activity()
    drift_sweep.watch(activity)
    reasons = aiotoggles.ToggleSet(any)
    return activity, await reasons.make_toggle(paused, name="a higher-priority peer")


async def test_a_pass_stops_when_the_replica_is_paused_midway() -> None:
    activity, peering = await _peered(paused=False)
    checks = _Checks()
    names = [f"u{i:02d}" for i in range(10)]
    task = asyncio.create_task(drift_sweep.sweep(activity, lambda: 0.5, lambda: names, checks, kind="user"))
    await asyncio.sleep(0.75)  # halfway through the first pass
    await peering.turn_to(True)
    done = len(checks.seen)
    await asyncio.sleep(0.6)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 0 < done < len(names)
    assert len(checks.seen) == done


def test_other_toggle_sets_are_not_taken_for_the_pause_state() -> None:
    activity = Activity()
    drift_sweep.watch(activity)
    aiotoggles.ToggleSet(all)  # Kopf's index pre-population set
    assert not drift_sweep.captured(activity)
    assert activity.active()


class _Timed:
    """A resource's timed check: records when it ran, answers the next time it wants (seconds from
    now), or fails."""

    def __init__(self, following: dict[str, float | None] | None = None, fail: set[str] | None = None,
                 hold: float = 0.0) -> None:
        self.seen: list[tuple[float, str]] = []
        self.following = following or {}
        self.fail = fail or set()
        self.hold = hold
        self.in_flight = 0
        self.most = 0

    async def __call__(self, name: str) -> float | None:
        self.seen.append((time.time(), name))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.in_flight -= 1
        if name in self.fail:
            raise RuntimeError("LiteLLM said no")
        after = self.following.get(name)
        return None if after is None else time.time() + after

    def times(self, name: str, since: float) -> list[float]:
        return [round(t - since, 2) for t, n in self.seen if n == name]


def _timetable(checks: _Timed, activity: Activity | None = None, exists: set[str] | None = None,
               **kwargs: Any) -> drift_sweep.Timetable:
    return drift_sweep.Timetable(activity or Activity(), checks,
                                 exists=(lambda name: True) if exists is None else exists.__contains__,
                                 idle=lambda: 10.0, kind="group keys", **kwargs)


async def _running(table: drift_sweep.Timetable, seconds: float) -> None:
    task = asyncio.create_task(table.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_each_check_runs_when_it_is_due_and_again_when_it_asks_to() -> None:
    checks = _Timed(following={"rotating": 0.3})
    table = _timetable(checks)
    start = time.time()
    table.at("quiet", start + 0.2)
    table.at("rotating", start + 0.1)
    await _running(table, 0.85)
    assert [n for _, n in checks.seen][:2] == ["rotating", "quiet"]
    rotating = checks.times("rotating", start)
    assert len(rotating) == 3 and rotating[0] >= 0.1
    assert all(0.28 <= b - a <= 0.45 for a, b in itertools.pairwise(rotating))
    # Nothing planned: next after the idle interval, not in a loop.
    assert len(checks.times("quiet", start)) == 1
    assert table.due("quiet") == pytest.approx(checks.seen[1][0] + 10.0, abs=0.1)


async def test_the_earliest_time_wins_and_a_later_one_changes_nothing() -> None:
    checks = _Timed()
    table = _timetable(checks)
    start = time.time()
    table.at("g", start + 5.0)
    task = asyncio.create_task(table.run())
    await asyncio.sleep(0.1)
    table.at("g", start + 0.2)  # wakes the waiting task: due before what it waits for
    table.at("g", start + 0.4)
    await asyncio.sleep(0.6)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert checks.times("g", start) == [pytest.approx(0.2, abs=0.08)]


async def test_forgotten_and_vanished_resources_are_not_checked_and_not_kept() -> None:
    checks = _Timed()
    table = _timetable(checks, exists={"kept", "forgotten"})
    now = time.time()
    for name in ("kept", "forgotten", "deleted"):
        table.at(name, now + 0.1)
    table.forget("forgotten")
    await _running(table, 0.3)
    assert [n for _, n in checks.seen] == ["kept"]
    assert table.due("forgotten") is None and table.due("deleted") is None
    assert table.due("kept") is not None


async def test_a_failing_check_is_retried_and_others_go_on() -> None:
    checks = _Timed(fail={"bad"})
    table = _timetable(checks, retry=0.2)
    start = time.time()
    table.at("bad", start)
    table.at("good", start + 0.05)
    await _running(table, 0.5)
    assert len(checks.times("bad", start)) == 3  # at 0, 0.2, 0.4
    assert len(checks.times("good", start)) == 1


async def test_checks_in_flight_are_bounded_and_cancelled_with_the_timetable() -> None:
    checks = _Timed(hold=10.0)
    table = _timetable(checks, parallel=4)
    now = time.time()
    for i in range(10):
        table.at(f"g{i}", now)
    task = asyncio.create_task(table.run())
    await asyncio.sleep(0.1)
    assert checks.most == 4 and checks.in_flight == 4
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert checks.in_flight == 0


async def test_a_resource_due_again_while_its_check_runs_is_checked_after_it_not_beside_it() -> None:
    checks = _Timed(hold=0.3)
    table = _timetable(checks)
    start = time.time()
    table.at("g", start)
    task = asyncio.create_task(table.run())
    await asyncio.sleep(0.1)
    table.at("g", time.time())  # say, a reconcile asked for a check meanwhile
    await asyncio.sleep(0.1)
    assert checks.most == 1 and len(checks.seen) == 1
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    first, second = checks.times("g", start)
    assert first < 0.05 and 0.29 <= second <= 0.6
    assert checks.most == 1


async def test_a_paused_replica_runs_no_timed_check_until_it_resumes() -> None:
    activity, peering = await _peered(paused=True)
    checks = _Timed()
    table = _timetable(checks, activity)
    table.at("g", time.time() + 0.1)
    task = asyncio.create_task(table.run())
    await asyncio.sleep(0.4)
    assert checks.seen == []
    resumed = time.time()
    await peering.turn_to(False)
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [n for _, n in checks.seen] == ["g"] and checks.seen[0][0] >= resumed


async def test_resource_copies_keep_everything_but_the_write_history() -> None:
    obj = {
        "apiVersion": "scim.litellm-operator.dev/v1alpha1", "kind": "ScimUser",
        "metadata": {"name": "u1", "resourceVersion": "42", "uid": "abc",
                     "annotations": {"a": "x" * 300}, "managedFields": [{"manager": "kopf", "fieldsV1": {}}]},
        "spec": {"userName": "ann@example.com", "emails": [{"value": "ann@example.com", "primary": True}]},
        "status": {"litellm": {"userId": "u1"}, "conditions": [{"type": "Synced", "status": "True"}]},
    }
    packed = pack(obj)
    assert len(packed) < len(str(obj)) // 2
    back = unpack(packed)
    assert "managedFields" not in back["metadata"]
    assert back == {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}
    assert "managedFields" in obj["metadata"]  # the watch event's object is left as it was

    async with client.ApiClient() as api:
        resources = Resources(api, "ns")
    resources.seen(USER, "u1", obj)
    first = resources.latest(USER, "u1")
    assert first == back
    assert first is not None
    first["status"] = {}  # a caller's change is its own
    assert resources.latest(USER, "u1") == back
    resources.seen(USER, "u1", None)
    assert resources.latest(USER, "u1") is None
