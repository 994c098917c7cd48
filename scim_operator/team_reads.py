"""LiteLLM's teams read in pages of 100 (``/v2/team/list``), not one read per ScimGroup: for a
restart's resumes (``TeamListing``) and for the group drift sweep (``DriftPages``).

A restart resumes every group, and each compares its team with LiteLLM. At 100,000 users and
10,000 groups LiteLLM answered ``/team/info`` in 0.4-0.8 s: one read per team took about 11
minutes at 8 calls at once. A page of the listing holds 100 team rows with what the comparison
reads (alias, metadata, settings, ``members_with_roles``), so the first resume attempt of a group
takes its team's row from the listing instead.

What keeps a listed row as good as a read of its own:
- it is handed out once, to the first attempt of a group's resume: a retry, and every other handler,
  reads ``/team/info``. Nothing of ours writes a team before its group's resume has run, so the row
  is what that resume would have read; a change made in LiteLLM meanwhile is drift, found by the
  drift checks as any other;
- it is never older than ``max_age`` (the drift interval): an older listing is dropped, and the
  next resume that asks starts a new one;
- a team missing from the listing is read directly (pages shift while teams are created, so a
  missing row proves nothing), as is any team whose comparison needs a field rows lack (the caller
  asks ``policies.listed_row_suffices`` first);
- only rows tagged for this namespace are kept, and the listing is not made when it would take more
  calls than reading each group's team (LiteLLM holding more than 100 teams per group of the
  namespace), nor for fewer than ``MIN_GROUPS`` groups.

A drift pass checks every group once per drift interval. Read one by one, at 100,000 users that is
33 team reads a second, all the time; in pages, 0.33. ``DriftPages.walk`` orders a pass by the pages:
it reads a page when the pass reaches it, hands the pass the groups whose teams it lists, then
the groups no page listed (their checks read directly). A row serves the check it was read for
only, only while younger than a quarter of the interval, and not when the operator wrote to the
team after the page was asked for (a member added meanwhile); what a check finds in a row it
confirms with ``/team/info`` before reporting or correcting anything, as with its own read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# The proxy's largest /v2/team/list page.
PAGE = 100
# Fewer groups than this read their teams one by one: as few calls, and no listing to wait for.
MIN_GROUPS = 10

# (rows of the page, teams in LiteLLM); pages are numbered from 1.
Page = Callable[[int], Awaitable[tuple[list[dict[str, Any]], int]]]


class TeamListing:
    """``await listing.take(team_id)`` -> the team's listed row, or None: read it directly."""

    def __init__(
        self,
        page: Page,
        *,
        keep: Callable[[dict[str, Any]], bool],
        groups: Callable[[], int],
        max_age: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._page = page
        self._keep = keep  # rows worth holding (tagged for this namespace)
        self._groups = groups  # groups a restart resumes: what the listing is weighed against
        self._max_age = max_age
        self._clock = clock
        self._rows: dict[str, dict[str, Any]] = {}
        self._started = -math.inf
        self._listing = False
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # set whenever a page arrived or the listing ended

    async def take(self, team_id: str) -> dict[str, Any] | None:
        if self._clock() - self._started > self._max_age():
            if self._groups() < MIN_GROUPS:
                return None
            await self._restart()
        while team_id not in self._rows and self._listing:
            self._progress.clear()
            await self._progress.wait()
        return self._rows.pop(team_id, None)

    async def _restart(self) -> None:
        await self.close()
        self._started = self._clock()
        self._listing = True
        self._task = asyncio.create_task(self._list(), name="team listing")

    async def _list(self) -> None:
        try:
            first, total = await self._page(1)
            pages = math.ceil(total / PAGE)
            if pages > self._groups():
                log.info("teams read one by one: LiteLLM holds more teams than the namespace has groups "
                         "to list them for", extra={"fields": {"teams": total, "groups": self._groups()}})
                return
            self._hold(first)
            for number in range(2, pages + 1):
                rows, _ = await self._page(number)
                self._hold(rows)
        except Exception as exc:  # the resumes read their teams directly instead
            log.warning("team listing failed; teams are read one by one",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        finally:
            self._listing = False
            self._progress.set()
        # Rows no resume took (teams of groups deleted meanwhile) go when the listing is too old.
        await asyncio.sleep(max(0.0, self._started + self._max_age() - self._clock()))
        self._rows.clear()

    def _hold(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            team_id = row.get("team_id")
            if isinstance(team_id, str) and self._keep(row):
                self._rows[team_id] = _compact(row)
        self._progress.set()

    def __len__(self) -> int:
        return len(self._rows)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._listing = False
        self._rows.clear()


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """Of a member, the comparisons read the id and the role: a 50,000-member team's row may wait a
    while, without its members' emails."""
    members = row.get("members_with_roles")
    if isinstance(members, list):
        row["members_with_roles"] = [
            {"user_id": m.get("user_id"), "role": m.get("role")} for m in members if isinstance(m, dict)]
    return row


class DriftPages:
    """The group drift sweep's order and rows: ``walk(names)`` for the sweep, ``take(team_id)`` for
    the check of the group it just handed out."""

    def __init__(
        self,
        page: Page,
        *,
        team_of: Callable[[str], str | None],
        max_age: Callable[[], float],
        written_since: Callable[[str, float], bool] = lambda _team, _when: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._page = page
        self._team_of = team_of  # a group's team, as this operator created or adopted it
        self._written_since = written_since  # (team, time of the page) -> did we write it since?
        self._max_age = max_age
        self._clock = clock
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}
        # The team ids of the pages held: a page's rows not taken go when the page after next arrives.
        self._pages: deque[list[str]] = deque()

    async def walk(self, names: list[str]) -> AsyncGenerator[str, None]:
        """Every one of ``names`` once: first in the order of LiteLLM's pages, then those no page listed."""
        self._drop()
        teams = {team: name for name in names if (team := self._team_of(name))}
        done: set[str] = set()
        if len(teams) >= MIN_GROUPS:
            asked = self._clock()
            first = await self._fetch(1)
            pages = 0 if first is None else math.ceil(first[1] / PAGE)
            if pages > len(teams):
                log.debug("group drift reads teams one by one: LiteLLM holds more teams than the "
                          "namespace has groups to list them for", extra={"fields": {"teams": first and first[1]}})
                pages = 0
            listed = first
            for number in range(1, pages + 1):
                if number > 1:
                    asked = self._clock()
                    listed = await self._fetch(number)
                if listed is None:
                    break  # a failed page: the rest are read one by one
                for name in self._hold(listed[0], teams, done, asked):
                    done.add(name)
                    yield name
        for name in names:
            if name not in done:
                yield name

    def take(self, team_id: str) -> dict[str, Any] | None:
        """The team's listed row when a page held it and it is fresh enough, once; else None. A row
        read before a write of ours to the team (a member added meanwhile) is not: it would show a
        difference that a confirming read then has to clear."""
        entry = self._rows.pop(team_id, None)
        if entry is None or self._clock() - entry[0] > self._max_age() / 4:
            return None
        if self._written_since(team_id, entry[0]):
            return None
        return entry[1]

    async def _fetch(self, number: int) -> tuple[list[dict[str, Any]], int] | None:
        try:
            return await self._page(number)
        except Exception as exc:
            log.warning("team page failed; the group drift checks read their teams one by one",
                        extra={"fields": {"page": number, "error": f"{type(exc).__name__}: {exc}"}})
            return None

    def _hold(self, rows: list[dict[str, Any]], teams: dict[str, str], done: set[str], asked: float) -> list[str]:
        now = asked  # when the page was asked for: a write that ended after that may be missing from it
        held: list[str] = []
        for row in rows:
            team_id = row.get("team_id")
            name = teams.get(team_id) if isinstance(team_id, str) else None
            if name is not None and name not in done and team_id is not None:
                self._rows[team_id] = (now, _compact(row))
                held.append(team_id)
        self._pages.append(held)
        while len(self._pages) > 2:
            for team_id in self._pages.popleft():
                self._rows.pop(team_id, None)
        return [teams[t] for t in held]

    def _drop(self) -> None:
        self._rows.clear()
        self._pages.clear()

    def __len__(self) -> int:
        return len(self._rows)
