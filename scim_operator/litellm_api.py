"""A small typed client of the LiteLLM proxy admin API (``/user/*``, ``/team/*``, ``/key/*``).

Every failure, whatever shape LiteLLM gives it, becomes one :class:`LiteLLMError` with the HTTP
status and a clean, human-readable message. The master key only ever travels in the Authorization
header: it is never part of a URL, a log line, an exception or a repr."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from pydantic import SecretStr

from scim_operator import metrics
from scim_operator.priority import PrioritySlots
from scim_operator.team_reads import PAGE as TEAM_PAGE
from scim_operator.user_reads import UserReads

log = logging.getLogger(__name__)

# Anything at or above this status (and connection problems, reported as status 0) is worth retrying.
_TRANSIENT = {0, 408, 425, 429}


# Calls that change what a team's row shows.
_TEAM_WRITES = frozenset({"/team/new", "/team/update", "/team/delete", "/team/member_add",
                          "/team/member_delete", "/team/member_update"})

# How a one-team read of /v2/team/list shows in the metrics, apart from the pages of teams.
TEAM_ROW = "/v2/team/list?team_id"


class LiteLLMError(Exception):
    """A LiteLLM admin API call failed. ``status`` is 0 when no HTTP answer arrived at all."""

    def __init__(self, status: int, message: str, *, kind: str | None = None, endpoint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.endpoint = endpoint

    @property
    def transient(self) -> bool:
        return self.status in _TRANSIENT or self.status >= 500

    def __str__(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        code = f"HTTP {self.status}" if self.status else "no answer"
        return f"{where}{self.message} ({code})"


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _unrepr(message: str) -> str:
    """LiteLLM often puts a Python repr of a dict in the message: ``"{'error': 'User x exists'}"``."""
    text = message.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            inner = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(inner, dict):
            for key in ("error", "message", "detail"):
                if isinstance(inner.get(key), str):
                    return str(inner[key])
    return text


def parse_error(status: int, body: Any, *, endpoint: str = "") -> LiteLLMError:
    """One exception from the three error shapes LiteLLM answers with (see the admin API notes):
    A ``{"error": {"message", "type", ...}}``, B ``{"detail": {"error": str}}`` / ``{"detail": str}``,
    C ``{"detail": [{"loc", "msg", ...}]}`` (422 validation)."""
    kind: str | None = None
    message = ""
    if isinstance(body, dict):
        err = body.get("error")
        detail = body.get("detail")
        if isinstance(err, dict):
            message = _unrepr(str(err.get("message") or ""))
            kind = str(err["type"]) if err.get("type") else None
        elif isinstance(err, str):
            message = _unrepr(err)
        elif isinstance(detail, dict):
            message = _unrepr(str(detail.get("error") or detail.get("message") or json.dumps(detail)))
        elif isinstance(detail, str):
            message = _unrepr(detail)
        elif isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            message = "; ".join(parts)
            kind = "validation_error"
    elif isinstance(body, str):
        message = body.strip()[:500]
    # LiteLLM quotes emails in some errors ("User with email ... exists"); these messages end up in
    # conditions and Events, which anyone who may read the namespace sees.
    message = _EMAIL.sub("<email>", message)
    return LiteLLMError(status, message or f"HTTP {status}", kind=kind, endpoint=endpoint)


# Members per /team/member_add call: one call for ordinary groups, bounded bodies for huge ones.
ADD_BATCH = 500


def member_add_slots(concurrency: int) -> int:
    """How many ``/team/member_add`` calls may be in flight at once for a given call concurrency.

    LiteLLM writes every added member inside one database transaction with a 5 s limit; with more
    than a couple of those in parallel they all run out of time (HTTP 500), so member additions get a
    quarter of the slots."""
    return max(1, concurrency // 4)


class LiteLLM:
    """The admin API calls the operator needs, with a concurrency limit and per-call metrics."""

    def __init__(
        self, url: str, master_key: SecretStr, *, timeout: float = 30.0, concurrency: int = 8
    ) -> None:
        self._url = url.rstrip("/")
        self._key = master_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = PrioritySlots(concurrency)
        self._member_limit = asyncio.Semaphore(member_add_slots(concurrency))
        self._background_limit = asyncio.Semaphore(member_add_slots(concurrency))
        self._session: aiohttp.ClientSession | None = None
        self._user_reads = UserReads(self.users_by_id)
        # team_id -> when (time.monotonic) the last write to the team ended: a team row asked for
        # before then may not show it (``written_since``). One float per team the operator wrote.
        self._team_writes: dict[str, float] = {}

    def written_since(self, team_id: str, when: float) -> bool:
        """Whether a write to the team ended at or after ``when`` (time.monotonic)."""
        return self._team_writes.get(team_id, -math.inf) >= when

    def __repr__(self) -> str:
        return f"LiteLLM(url={self._url!r})"

    @property
    def url(self) -> str:
        return self._url

    async def close(self) -> None:
        await self._user_reads.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._key.get_secret_value()}"},
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        urgent: bool = False,
        background: bool = False,
        label: str | None = None,
    ) -> Any:
        """One admin API call. ``urgent``: it takes access away (lists or blocks a user's keys, deletes
        keys, users or memberships). Urgent calls go first when calls queue up: a deactivation during
        a bulk provisioning must not wait behind hundreds of queued user creations. (Giving team and
        membership calls precedence too was measured and rejected: the early, partial member additions
        it causes cost LiteLLM more than the overlap saves.) ``background``: a drift read, served after
        everything else and at most a quarter of the slots at once, so periodic checks of a large
        directory never hold back a reconcile, nor load the proxy while member additions (which hold
        few slots of their own) run. ``label``: the call's ``endpoint`` in the metrics and errors, when
        the path alone does not tell what was asked (a page of teams or one team's row)."""
        endpoint = label or path
        status_label = "error"
        share = self._background_limit if background else contextlib.nullcontext()
        async with share, self._limit.slot(0 if urgent else 2 if background else 1):
            # Latency is LiteLLM's answer time, not time spent waiting for a free slot here.
            started = time.perf_counter()
            try:
                async with self._http().request(method, self._url + path, params=params, json=body) as resp:
                    status_label = str(resp.status)
                    text = await resp.text()
                    try:
                        data: Any = json.loads(text) if text else None
                    except ValueError:
                        data = text
                    if resp.status >= 400:
                        raise parse_error(resp.status, data, endpoint=endpoint)
                    return data
            except (aiohttp.ClientError, TimeoutError) as exc:
                status_label = "unreachable"
                # The exception text of aiohttp names the URL, never the header: safe to keep.
                reason = (
                    type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                )
                raise LiteLLMError(0, f"LiteLLM unreachable: {reason}", endpoint=endpoint) from None
            finally:
                if path in _TEAM_WRITES and body is not None:
                    # When it ended, answered or not: a page asked for before then may miss it.
                    for team_id in body.get("team_ids") or [body.get("team_id")]:
                        if isinstance(team_id, str):
                            self._team_writes[team_id] = time.monotonic()
                elapsed = time.perf_counter() - started
                metrics.LITELLM_CALLS.labels(endpoint, status_label).inc()
                metrics.LITELLM_LATENCY.labels(endpoint).observe(elapsed)
                if status_label == "unreachable" or not status_label.startswith("2"):
                    metrics.LITELLM_ERRORS.labels(endpoint, status_label).inc()
                log.debug(
                    "litellm call",
                    extra={
                        "fields": {"endpoint": endpoint, "status": status_label, "seconds": round(elapsed, 4)}
                    },
                )

    async def _found(
        self, method: str, path: str, *, params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None, urgent: bool = False, background: bool = False,
    ) -> tuple[bool, Any]:
        """(found, answer) of one call: LiteLLM's 404 means the object does not exist, an answer,
        not an error (the one place that turns it into one)."""
        try:
            return True, await self.call(
                method, path, params=params, body=body, urgent=urgent, background=background
            )
        except LiteLLMError as exc:
            if exc.status == 404:
                return False, None
            raise

    # ---- users -------------------------------------------------------------------------------
    async def user_info(self, user_id: str) -> dict[str, Any] | None:
        found, data = await self._found("GET", "/user/info", params={"user_id": user_id})
        if not found:
            return None
        info = data.get("user_info") if isinstance(data, dict) else None
        # An unknown id may also come back as 200 with an empty user_info.
        if not isinstance(info, dict) or info.get("user_id") != user_id:
            return None
        return info

    async def drift_user_info(self, user_id: str) -> dict[str, Any] | None:
        """What :meth:`user_info` answers, read for a drift check: together with the other drift
        checks due within a second, in one ``/user/list`` call."""
        return await self._user_reads.info(user_id)

    async def users_by_id(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """user_id -> user record of those of ``user_ids`` LiteLLM has, in background calls of
        ``/user/list?user_ids=`` (a comma-separated list, so an id holding a comma is read alone)."""
        found: dict[str, dict[str, Any]] = {}
        listed = [uid for uid in user_ids if "," not in uid]
        for uid in user_ids:
            if "," in uid and (info := await self.user_info(uid)) is not None:
                found[uid] = info
        wanted = set(listed)
        page = 1
        while listed:
            data = await self.call(
                "GET", "/user/list",
                params={"user_ids": ",".join(listed), "page": str(page), "page_size": "100"},
                background=True,
            )
            users = data.get("users") if isinstance(data, dict) else None
            if not isinstance(users, list):
                raise LiteLLMError(502, "LiteLLM answered /user/list without a user list", endpoint="/user/list")
            for user in users:
                held = user.get("user_id") if isinstance(user, dict) else None
                if isinstance(held, str) and held in wanted:  # the filter is LiteLLM's: trust exact ids only
                    found[held] = user
            if not users or page >= int(data.get("total_pages") or 1):
                return found
            page += 1
        return found

    async def user_new(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/user/new", body={**body, "auto_create_key": False})
        return result

    async def user_with_sso_id(self, sso_user_id: str) -> str | None:
        """The user_id of the user holding this ``sso_user_id`` (unique in LiteLLM), if any."""
        data = await self.call("GET", "/user/list", params={"sso_user_ids": sso_user_id, "page_size": "2"})
        users = data.get("users") if isinstance(data, dict) else None
        for user in users or []:
            if isinstance(user, dict) and user.get("sso_user_id") == sso_user_id and user.get("user_id"):
                return str(user["user_id"])
        return None

    async def user_update(self, body: dict[str, Any]) -> None:
        await self.call("POST", "/user/update", body=body)

    async def user_delete(self, user_id: str) -> bool:
        """False when the user did not exist."""
        found, _ = await self._found("POST", "/user/delete", body={"user_ids": [user_id]}, urgent=True)
        return found

    # ---- teams -------------------------------------------------------------------------------
    async def team_info(self, team_id: str, *, background: bool = False) -> dict[str, Any] | None:
        found, data = await self._found("GET", "/team/info", params={"team_id": team_id}, background=background)
        if not found:
            return None
        info = data.get("team_info") if isinstance(data, dict) else None
        return info if isinstance(info, dict) else None

    async def team_page(self, page: int, *, background: bool = False) -> tuple[list[dict[str, Any]], int]:
        """(teams, how many teams LiteLLM holds) of one ``/v2/team/list`` page of 100, in team_id
        order. Each row is the team's record as ``/team/info`` gives it, without the tables joined
        to it (the member budget, the object permissions)."""
        return await self._team_list({"page": str(page), "page_size": str(TEAM_PAGE), "sort_by": "team_id",
                                      "sort_order": "asc"}, background=background)

    async def team_row(self, team_id: str, *, background: bool = False) -> dict[str, Any] | None:
        """The team's row as :meth:`team_page` lists it, or None when LiteLLM has no such team. Unlike
        ``/team/info`` it does not read the team's memberships and keys from their tables, which
        took LiteLLM 0.4-0.8 s per call at 100,000 users."""
        rows, _ = await self._team_list({"team_id": team_id, "page_size": "1"}, background=background,
                                        label=TEAM_ROW)
        return next((r for r in rows if r.get("team_id") == team_id), None)

    async def _team_list(
        self, params: dict[str, str], *, background: bool = False, label: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        data = await self.call("GET", "/v2/team/list", params=params, background=background, label=label)
        rows = data.get("teams") if isinstance(data, dict) else None
        total = data.get("total") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not isinstance(total, int):
            raise LiteLLMError(200, "unexpected /v2/team/list answer", endpoint=label or "/v2/team/list")
        return [row for row in rows if isinstance(row, dict)], total

    async def team_new(self, body: dict[str, Any]) -> None:
        await self.call("POST", "/team/new", body=body)

    async def team_update(self, body: dict[str, Any]) -> None:
        await self.call("POST", "/team/update", body=body)

    async def team_delete(self, team_id: str) -> bool:
        found, _ = await self._found("POST", "/team/delete", body={"team_ids": [team_id]})
        return found

    async def member_add(self, team_id: str, user_ids: Iterable[str] | Callable[[], Iterable[str]]) -> bool:
        """Adds members with role ``user`` in calls of at most ADD_BATCH; members already in the team
        count as success. Returns whether a call failed on the way in a way LiteLLM may have
        half-applied (the caller then compares the team again later).

        ``user_ids`` may be a function: it is called once a membership slot is free, so members that
        became ready while the call queued behind other teams' additions go in the same call: one
        /team/member_add per team instead of several partial ones."""
        chosen: list[str] = []

        def first() -> list[str]:
            chosen[:] = user_ids() if callable(user_ids) else user_ids
            return chosen[:ADD_BATCH]

        uncertain = await self._add_chunk(team_id, first)
        for start in range(ADD_BATCH, len(chosen), ADD_BATCH):
            uncertain |= await self._add_chunk(team_id, functools.partial(list, chosen[start : start + ADD_BATCH]))
        return uncertain

    async def _add_chunk(self, team_id: str, choose: Callable[[], list[str]]) -> bool:
        sent: list[str] = []

        def pick() -> list[str]:
            sent[:] = choose()
            return sent

        try:
            await self._member_add_call(team_id, pick)
            return False
        except LiteLLMError as exc:
            # LiteLLM adds a list in one database transaction with a 5 s limit: a busy proxy answers
            # a large list with a 500 ("Transaction already closed"). Halves still get through, and a
            # list that partly landed is harmless (members already in the team are skipped).
            if exc.status < 500 or len(sent) < 2:
                raise
            log.info(
                "member_add too large for LiteLLM right now; splitting",
                extra={"fields": {"team": team_id, "members": len(sent), "error": exc.message[:200]}},
            )
        head, tail = sent[: len(sent) // 2], sent[len(sent) // 2 :]
        await self._add_chunk(team_id, functools.partial(list, head))
        await self._add_chunk(team_id, functools.partial(list, tail))
        return True

    async def _member_add_call(self, team_id: str, user_ids: Callable[[], Iterable[str]]) -> None:
        try:
            async with self._member_limit:
                members = [{"user_id": uid, "role": "user"} for uid in user_ids()]
                if not members:
                    return
                await self.call("POST", "/team/member_add", body={"team_id": team_id, "member": members})
        except LiteLLMError as exc:
            if exc.kind != "team_member_already_in_team":
                raise

    async def member_update(self, team_id: str, user_id: str, role: str) -> None:
        """Sets a member's role in the team (``admin`` or ``user``)."""
        await self.call(
            "POST", "/team/member_update", body={"team_id": team_id, "user_id": user_id, "role": role}
        )

    async def member_delete(self, team_id: str, user_id: str) -> None:
        """Removes one member; a user that is not a member counts as success."""
        try:
            await self.call(
                "POST", "/team/member_delete", body={"team_id": team_id, "user_id": user_id}, urgent=True
            )
        except LiteLLMError as exc:
            if not (exc.status == 400 and "not found in team" in exc.message.lower()):
                raise

    # ---- keys --------------------------------------------------------------------------------
    async def list_keys(self, *, urgent: bool = False, **filters: str) -> list[dict[str, Any]]:
        """Every key matching the ``/key/list`` filters (``user_id``, ``team_id``, ``key_alias``), all
        pages, as full objects (hash in ``token``, ``blocked``, ``metadata``). Each key is checked
        against the filters again: LiteLLM does not match every filter exactly."""
        keys: list[dict[str, Any]] = []
        page = 1
        while True:
            data = await self.call(
                "GET",
                "/key/list",
                params={**filters, "return_full_object": "true", "page": str(page), "size": "100"},
                urgent=urgent,
            )
            batch = data.get("keys", []) if isinstance(data, dict) else []
            keys.extend(
                k for k in batch if isinstance(k, dict) and all(k.get(f) == v for f, v in filters.items())
            )
            if not isinstance(data, dict) or page >= int(data.get("total_pages") or 1) or not batch:
                return keys
            page += 1

    async def user_keys(self, user_id: str) -> list[dict[str, Any]]:
        """Every key of a user; listed to take access away, so it goes ahead of queued work."""
        return await self.list_keys(user_id=user_id, urgent=True)

    async def key_block(self, key_hash: str) -> bool:
        """False when the key no longer exists."""
        found, _ = await self._found("POST", "/key/block", body={"key": key_hash}, urgent=True)
        return found

    async def key_unblock(self, key_hash: str) -> bool:
        """False when the key no longer exists."""
        found, _ = await self._found("POST", "/key/unblock", body={"key": key_hash})
        return found

    async def key_delete(self, key_hashes: list[str]) -> None:
        """Deletes the keys; keys that no longer exist count as deleted."""
        if key_hashes:
            await self._found("POST", "/key/delete", body={"keys": key_hashes}, urgent=True)

    async def key_generate(self, body: dict[str, Any]) -> tuple[str, str]:
        """(plaintext, hash) of a new key. The plaintext is returned to go straight into a Secret."""
        data = await self.call("POST", "/key/generate", body=body)
        plaintext = data.get("key") if isinstance(data, dict) else None
        key_hash = data.get("token") if isinstance(data, dict) else None
        if not plaintext or not key_hash:
            raise LiteLLMError(200, "answer without key", endpoint="/key/generate")
        return str(plaintext), str(key_hash)

    async def key_rename(self, key_hash: str, alias: str) -> bool:
        """Give a key another alias; False when the key does not exist (or LiteLLM refuses, 400, as it
        does for a key it no longer has)."""
        try:
            await self.call("POST", "/key/update", body={"key": key_hash, "key_alias": alias})
        except LiteLLMError as exc:
            if exc.status not in (400, 404):
                raise
            return False
        return True
