"""LiteLLM's teams in pages: a restart's listing and the group drift pass. Each row handed once,
never stale, never a reason to skip a read or a group (the real proxy's rows: ``test_litellm_api``;
the drift checks on a converged directory: ``test_restart``)."""

from __future__ import annotations

import asyncio
from typing import Any

from scim_operator.team_reads import MIN_GROUPS, PAGE, DriftPages, TeamListing


class Pages:
    """``/v2/team/list`` over ``teams`` (sorted by id), counting calls; ``gate`` holds pages back."""

    def __init__(self, teams: list[str], *, fail_at: int | None = None) -> None:
        self.teams = sorted(teams)
        self.calls: list[int] = []
        self.fail_at = fail_at
        self.gate: asyncio.Event | None = None

    async def __call__(self, number: int) -> tuple[list[dict[str, Any]], int]:
        self.calls.append(number)
        if self.gate is not None and number > 1:
            await self.gate.wait()
        if number == self.fail_at:
            raise RuntimeError("LiteLLM answered 500")
        member = {"user_id": "u1", "user_email": "u1@example.com", "role": "admin", "user_alias": None}
        rows = [{"team_id": t, "metadata": {"owner": "ns/" + t}, "members_with_roles": [member]}
                for t in self.teams[(number - 1) * PAGE:number * PAGE]]
        return rows, len(self.teams)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _listing(pages: Pages, *, groups: int = 300, clock: Clock | None = None, max_age: float = 300.0) -> TeamListing:
    return TeamListing(pages, keep=lambda row: not row["team_id"].startswith("other"), groups=lambda: groups,
                       max_age=lambda: max_age, clock=clock or Clock())


async def test_every_team_is_read_in_pages_and_each_row_is_handed_out_once() -> None:
    pages = Pages([f"t{i:03d}" for i in range(250)])
    listing = _listing(pages)
    rows = await asyncio.gather(*(listing.take(f"t{i:03d}") for i in range(250)))
    assert [r["team_id"] for r in rows if r] == [f"t{i:03d}" for i in range(250)]
    assert pages.calls == [1, 2, 3]
    # What the comparisons read of a member, nothing else held meanwhile.
    assert rows[0] == {"team_id": "t000", "metadata": {"owner": "ns/t000"},
                       "members_with_roles": [{"user_id": "u1", "role": "admin"}]}
    # A retry, or a second handler of the same group, reads the team itself.
    assert await listing.take("t007") is None
    assert len(listing) == 0 and pages.calls == [1, 2, 3]


async def test_a_resume_waits_for_its_page_and_a_team_not_listed_is_read_directly() -> None:
    pages = Pages([f"t{i:03d}" for i in range(150)] + ["other-1"])
    pages.gate = asyncio.Event()
    listing = _listing(pages)
    late = asyncio.create_task(listing.take("t120"))
    missing = asyncio.create_task(listing.take("t999"))
    early = await listing.take("t001")
    assert early is not None and not late.done() and not missing.done()
    pages.gate.set()
    assert (await late or {}).get("team_id") == "t120"
    assert await missing is None  # not listed: the caller reads /team/info
    assert await listing.take("other-1") is None  # tagged for someone else: never held


async def test_no_listing_when_it_would_cost_more_calls_than_one_read_per_group() -> None:
    pages = Pages([f"t{i:04d}" for i in range(1200)])
    listing = _listing(pages, groups=11)  # 12 pages for 11 groups
    assert await listing.take("t0005") is None
    assert pages.calls == [1]
    few = Pages(["t1"])
    assert await _listing(few, groups=MIN_GROUPS - 1).take("t1") is None
    assert few.calls == []


async def test_rows_are_never_older_than_the_drift_interval() -> None:
    clock = Clock()
    pages = Pages([f"t{i}" for i in range(20)])
    listing = _listing(pages, clock=clock, max_age=300)
    assert await listing.take("t1") is not None
    clock.now += 301
    # A resume after that (a peer taking over hours later) gets a fresh listing, not the old rows.
    assert (await listing.take("t2") or {}).get("team_id") == "t2"
    assert pages.calls == [1, 1]
    await listing.close()


async def test_a_failed_page_leaves_the_rows_read_so_far_and_the_rest_read_directly() -> None:
    pages = Pages([f"t{i:03d}" for i in range(250)], fail_at=2)
    listing = _listing(pages)
    assert await listing.take("t150") is None
    assert (await listing.take("t010") or {}).get("team_id") == "t010"
    await listing.close()
    assert len(listing) == 0


def _drift(pages: Pages, clock: Clock | None = None, interval: float = 300.0) -> DriftPages:
    # Group g-<team> owns team <team>; other teams belong to no group of the namespace.
    return DriftPages(pages, team_of=lambda name: name.removeprefix("g-"), max_age=lambda: interval,
                      clock=clock or Clock())


async def test_a_drift_pass_follows_the_pages_and_reads_each_page_when_it_gets_there() -> None:
    teams = [f"t{i:03d}" for i in range(250)]
    pages = Pages([*teams, "x-other"])  # sorted last: page 1 holds t000-t099
    drift = _drift(pages)
    # Groups in another order than LiteLLM's; one whose team LiteLLM lost (deleted by hand).
    names = [f"g-{t}" for t in reversed(teams)] + ["g-t999"]
    walk = drift.walk(names)
    first = [await anext(walk) for _ in range(PAGE)]
    assert first == [f"g-{t}" for t in teams[:PAGE]] and pages.calls == [1]
    assert (drift.take("t000") or {}).get("team_id") == "t000"
    assert drift.take("t000") is None  # once
    rest = [name async for name in walk]
    assert pages.calls == [1, 2, 3]
    assert rest == [f"g-{t}" for t in teams[PAGE:]] + ["g-t999"]  # unlisted last: read directly
    assert drift.take("t999") is None
    # At most two pages of rows wait for their checks: not the whole directory.
    assert len(drift) <= 2 * PAGE


async def test_a_drift_row_serves_only_while_fresh() -> None:
    clock = Clock()
    pages = Pages([f"t{i:03d}" for i in range(20)])
    drift = _drift(pages, clock, interval=300)
    walk = drift.walk([f"g-t{i:03d}" for i in range(20)])
    assert await anext(walk) == "g-t000"
    clock.now += 74
    assert drift.take("t000") is not None
    clock.now += 2  # 76 s: older than a quarter of the interval
    assert drift.take("t001") is None
    await walk.aclose()


async def test_a_drift_row_asked_for_before_a_write_of_ours_to_its_team_is_not_used() -> None:
    clock = Clock()
    written: dict[str, float] = {}
    pages = Pages([f"t{i:03d}" for i in range(20)])
    drift = DriftPages(pages, team_of=lambda name: name.removeprefix("g-"), max_age=lambda: 300.0,
                       written_since=lambda team, when: written.get(team, -1.0) >= when, clock=clock)
    walk = drift.walk([f"g-t{i:03d}" for i in range(20)])
    assert await anext(walk) == "g-t000"
    written["t001"] = clock.now + 1  # a member added after the page was asked for
    written["t002"] = clock.now - 1  # one that ended before
    assert drift.take("t001") is None  # the check reads the team itself
    assert (drift.take("t002") or {}).get("team_id") == "t002"
    await walk.aclose()


async def test_a_drift_pass_reads_one_by_one_when_pages_do_not_pay_or_fail() -> None:
    names = [f"g-t{i:04d}" for i in range(11)]
    crowded = Pages([f"t{i:04d}" for i in range(1200)])  # 12 pages for 11 groups
    drift = _drift(crowded)
    assert [n async for n in drift.walk(names)] == names
    assert crowded.calls == [1] and drift.take("t0001") is None
    few = Pages(["t0001"])
    assert [n async for n in _drift(few).walk(names[:MIN_GROUPS - 1])] == names[:MIN_GROUPS - 1]
    assert few.calls == []
    failing = Pages([f"t{i:04d}" for i in range(150)], fail_at=2)
    many = [f"g-t{i:04d}" for i in range(150)]
    assert sorted([n async for n in _drift(failing).walk(many)]) == many  # every group still checked once
