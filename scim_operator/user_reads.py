"""Drift reads of LiteLLM users, gathered into ``/user/list`` calls of up to 100 users.

A user's drift check no longer costs a ``/user/info`` of its own: the users whose checks the drift
sweep (``drift_sweep``) starts within the same short window are read together with
``GET /user/list?user_ids=a,b,c``. At 100,000 users and a 300 s drift interval that is about 333
checks a second, so the reads drop from 333 calls a second to a handful, and they run below every
reconcile in the call queue (``background``), so drift never holds back a provisioning burst."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

# The proxy's largest /user/list page.
BATCH = 100
# How long the first read of a batch waits for others. Drift has no latency target; a wider window
# gathers more timers per call (about 333 fire per second at 100,000 users every 300 s).
WINDOW = 1.0

Fetch = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]


class UserReads:
    """``await reads.info(user_id)`` -> LiteLLM's user record, or None when LiteLLM has no such user."""

    def __init__(self, fetch: Fetch, *, window: float = WINDOW, batch: int = BATCH) -> None:
        self._fetch = fetch
        self._window = window
        self._batch = batch
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def info(self, user_id: str) -> dict[str, Any] | None:
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        try:
            return await future
        finally:
            # A cancelled waiter leaves no reference behind (its sweep was stopped).
            waiters = self._waiting.get(user_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiting[user_id]

    async def _flush(self) -> None:
        while self._waiting:
            if len(self._waiting) < self._batch:
                await asyncio.sleep(self._window)
            ids = list(self._waiting)[: self._batch]
            if not ids:
                return
            waiters = {uid: self._waiting.pop(uid) for uid in ids}
            try:
                found = await self._fetch(ids)
            except Exception as exc:  # handed to every waiter of this batch, who reports it
                for futures in waiters.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for uid, futures in waiters.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(uid))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
