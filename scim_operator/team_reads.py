"""LiteLLM's teams read for a restart in pages of 100 (``/v2/team/list``), not one ``/team/info``
per ScimGroup.

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
  namespace), nor for fewer than ``MIN_GROUPS`` groups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
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
                # Of a member, the comparisons read the id and the role: a 50,000-member team's row
                # may wait here a while, without its members' emails.
                members = row.get("members_with_roles")
                if isinstance(members, list):
                    row["members_with_roles"] = [
                        {"user_id": m.get("user_id"), "role": m.get("role")} for m in members if isinstance(m, dict)]
                self._rows[team_id] = row
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
