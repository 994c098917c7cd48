"""An in-memory copy of one Kubernetes resource collection, kept current by list + watch.

The endpoint answers reads from these copies so a list or filter never costs an API call per object.
Each informer lists once (in pages), then watches from the list's resourceVersion; a 410 Gone (the
watch fell out of the API server's history) triggers a fresh list. Writes made by this process are
applied from the API server's response at once (``apply``/``forget``), so this replica reads its own
writes without waiting for the watch.

The copy is kept compact (``Objects``): each object as its JSON text, deflated with the collection's
first object as preset dictionary (objects of one kind share most of their text: 600-1,100 bytes
become 110-200), decoded on access. 100,000 users then cost a few hundred bytes each instead of a
graph of Python dicts and strings per attribute (about 8 KB); what no reader needs (managedFields of
users and groups) is dropped before it is stored. Compressing costs ~9 us per object, decoding ~15.

Listing is what a restart waits for (184,000 objects at 100,000 users), so a custom resource's list
page is decoded by msgspec into ``CustomObject`` structs: the skipped managedFields (half of each
object's text) are never turned into Python objects and the rest is encoded back in one C call,
~13 us per object where ``json.loads`` + ``json.dumps`` took ~65. The next page is requested before
the current one is stored, so the API server prepares it while this process works.

resourceVersions are compared as integers: the API server documents them as opaque, but every
etcd-backed server hands out the etcd revision, and ordering them is what makes "has the watch caught
up with revision R" answerable at all (``wait_for``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, ClassVar

import msgspec
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ListFn = Callable[..., Awaitable[Any]]
# (name, old object or None, new object or None) after each change of the copy.
Listener = Callable[[str, Obj | None, Obj | None], None]

WATCH_SECONDS = 290
# Objects per list page. Each page is decoded whole before it is stored compactly, and the memory
# of that peak stays with the process: 5,000 users per page (~40 MB decoded, three collections at
# once) measured ~60 MB more RSS than 1,000 for a barely faster start.
PAGE = 1000


def rv_of(obj: Obj) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


def terminating(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (if any) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _keep(obj: Obj) -> Obj:
    return obj


def without_managed_fields(obj: Obj) -> Obj:
    """Drop the field-manager records (half an object's size); an update sent without them keeps
    the stored ones."""
    obj["metadata"].pop("managedFields", None)
    return obj


# ---- list pages of custom resources, decoded into structs --------------------------------------------
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class ObjectMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Kubernetes' ObjectMeta (every field it defines) without managedFields. Fields in the API
    server's own (alphabetical) order, so an object encoded from here reads as the server writes it
    and deflates as well against the preset dictionary as one taken from a watch event."""

    annotations: dict[str, str] | None = None
    creationTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    deletionTimestamp: str | None = None
    finalizers: list[str] | None = None
    generateName: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    name: str = ""
    namespace: str | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    resourceVersion: str | None = None
    selfLink: str | None = None
    uid: str | None = None


class ObjectMetaWithFields(ObjectMeta, kw_only=True, omit_defaults=True):
    """ObjectMeta with managedFields kept as the server's bytes: stored and sent back, never decoded
    while listing."""

    managedFields: msgspec.Raw = msgspec.Raw()


_META_FIELDS = ObjectMeta.__struct_fields__


class CustomObject(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A custom resource as listed: apiVersion, kind, metadata (without managedFields), spec, status
    (the only top-level fields a custom resource has)."""

    keeps_managed_fields: ClassVar[bool] = False
    apiVersion: str | None = None
    kind: str | None = None
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: dict[str, Any] | None = None
    status: dict[str, Any] | None = None

    def as_dict(self) -> Obj:
        """The object as listeners see it: as stored, except that managedFields are left out."""
        md = self.metadata
        meta = {f: v for f in _META_FIELDS if (v := getattr(md, f)) is not None}
        out: Obj = {"apiVersion": self.apiVersion, "kind": self.kind, "metadata": meta}
        if self.spec is not None:
            out["spec"] = self.spec
        if self.status is not None:
            out["status"] = self.status
        return out


class CustomObjectWithFields(CustomObject, kw_only=True, omit_defaults=True):
    keeps_managed_fields: ClassVar[bool] = True
    metadata: ObjectMetaWithFields = msgspec.field(default_factory=ObjectMetaWithFields)


class ListMeta(msgspec.Struct, omit_defaults=True):
    resourceVersion: str = "0"
    continue_: str = msgspec.field(default="", name="continue")


def _page_decoder(shape: type[CustomObject] | None) -> Callable[[bytes], Any]:
    items: Any = list[shape] if shape is not None else list[dict[str, Any]]  # type: ignore[valid-type]
    page = msgspec.defstruct("Page", [("items", items | None, None),
                                      ("metadata", ListMeta, msgspec.field(default_factory=ListMeta))])
    return msgspec.json.Decoder(page).decode


class Objects(Mapping[str, Obj]):
    """name -> object, stored as deflated JSON and decoded on each access (a fresh dict, so a caller
    may change what it gets without touching the copy)."""

    def __init__(self) -> None:
        self._raw: dict[str, bytes] = {}
        self._zdict = b""

    def _encode(self, obj: Obj | bytes) -> bytes:
        text = obj if isinstance(obj, bytes) else _json_encode(obj)
        if not self._zdict:
            self._zdict = text
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, self._zdict)
        return deflate.compress(text) + deflate.flush()

    def _decode(self, raw: bytes) -> Obj:
        decoded: Obj = _json_decode(zlib.decompressobj(-15, self._zdict).decompress(raw))
        return decoded

    def __getitem__(self, name: str) -> Obj:
        return self._decode(self._raw[name])

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def put(self, name: str, obj: Obj | bytes) -> None:
        """Store ``obj``, given as a dict or as its JSON text."""
        # Interned: the same ids appear as member values, index entries and in the listing order.
        self._raw[sys.intern(name)] = self._encode(obj)

    def pop(self, name: str, default: Obj | None = None) -> Obj | None:
        raw = self._raw.pop(name, None)
        return default if raw is None else self._decode(raw)

    def __delitem__(self, name: str) -> None:
        del self._raw[name]


class Informer:
    """``shape``: for a custom resource, ``CustomObject`` (stored without managedFields) or
    ``CustomObjectWithFields`` (kept); None (any other kind) lists into plain dicts, kept whole."""

    def __init__(self, kind: str, list_fn: ListFn, shape: type[CustomObject] | None = None, **selector: str) -> None:
        self.kind = kind
        self._list_fn = list_fn
        self._selector = selector
        self._shape = shape
        self._decode_page = _page_decoder(shape)
        self._strip: Callable[[Obj], Obj] = (
            without_managed_fields if shape is not None and not shape.keeps_managed_fields else _keep)
        self.objects = Objects()
        # Highest revision the watch (or a list) has delivered: where a new watch resumes.
        self.rv = 0
        # Highest revision this copy is known to include (rv, or a barrier's revision, see wait_for).
        self.confirmed = 0
        self.synced = asyncio.Event()
        self.listeners: list[Listener] = []
        self._tombstones: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._last_event = 0.0
        self._task: asyncio.Task[None] | None = None
        # Watch lag of this process's own writes (response received -> event received), in seconds.
        self._own_writes: dict[int, float] = {}
        self.lags: deque[float] = deque(maxlen=50)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind}")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = 0.2
        # A restarted informer resumes its watch where it stopped; the API server answers 410 Gone
        # when that point has left its history, and the copy is listed again.
        need_list = not self.synced.is_set()
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch of %s expired; listing again", self.kind)
                    need_list = True
                    continue
                log.warning("watch of %s failed: %s %s; retrying", self.kind, exc.status, exc.reason)
            except Exception as exc:
                log.warning("watch of %s failed: %s; retrying", self.kind, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ---- list + watch ----------------------------------------------------------------------------
    async def _list(self) -> None:
        # Into the live copy: a relist (after 410 Gone) serves the older copy meanwhile, updated as
        # pages arrive, and drops what was not listed at the end.
        items = self.objects
        seen: set[str] = set()
        list_rv = 0
        pending: asyncio.Task[Any] | None = asyncio.create_task(self._page(None))
        try:
            while pending is not None:
                page = await pending
                pending = None
                if not list_rv:
                    list_rv = int(page.metadata.resourceVersion)
                if page.metadata.continue_:
                    # The API server prepares the next page while this one is stored.
                    pending = asyncio.create_task(self._page(page.metadata.continue_))
                for item in page.items or ():
                    if isinstance(item, CustomObject):
                        if item.metadata.deletionTimestamp:
                            continue
                        name, obj, text = item.metadata.name, item.as_dict(), _json_encode(item)
                    else:
                        if terminating(item):
                            continue
                        obj = self._strip(item)
                        name, text = obj["metadata"]["name"], _json_encode(obj)
                    seen.add(name)
                    before = items.get(name) if items else None
                    items.put(name, text)
                    if before is None or rv_of(before) != rv_of(obj):
                        self._notify(name, before, obj)
                # Each page's objects are dropped before the next is read: only the compact copy grows.
                del page
        finally:
            await cancel(pending)
        self._tombstones.clear()
        for name in set(items) - seen:
            gone = items.pop(name)
            self._notify(name, gone, None)
        self._advance(list_rv)
        self.synced.set()

    async def _page(self, cont: str | None) -> Any:
        kwargs: dict[str, Any] = {"limit": PAGE, **self._selector}
        if cont:
            kwargs["_continue"] = cont
        resp = await self._list_fn(**kwargs, _preload_content=False)
        return self._decode_page(await resp.read())

    async def _watch(self) -> None:
        resp = await self._list_fn(
            **self._selector, watch=True, resource_version=str(self.rv), allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS, _preload_content=False, _request_timeout=WATCH_SECONDS + 30,
        )
        # Lines can exceed aiohttp's readline limit (a shard of a large group is ~300 KB): split here.
        buffer = b""
        async with resp:
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._event(_json_decode(line))

    def _event(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("message", "")))
        self._last_event = asyncio.get_running_loop().time()
        rv = rv_of(obj)
        written = self._own_writes.pop(rv, None)
        if written is not None:
            self.lags.append(self._last_event - written)
        if kind == "BOOKMARK":
            self._advance(rv)
            return
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self._tombstones.pop(name, None)
            old = self.objects.pop(name, None)
            if old is not None:
                self._notify(name, old, None)
        else:
            self._put(obj)
        self._advance(rv)

    # ---- local updates from this process's writes -------------------------------------------------
    def apply(self, obj: Obj) -> None:
        """Take an object returned by a write, unless the copy already holds a newer one."""
        rv = rv_of(obj)
        if rv > self.rv:
            if len(self._own_writes) > 1000:
                self._own_writes.clear()
            self._own_writes[rv] = asyncio.get_running_loop().time()
        self._put(obj)

    def forget(self, name: str) -> None:
        """Drop an object this process deleted; older watch events for it are then ignored."""
        old = self.objects.pop(name, None)
        self._tombstones[name] = max(self._tombstones.get(name, 0), rv_of(old) if old else 0)
        if old is not None:
            self._notify(name, old, None)

    def _put(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        rv = rv_of(obj)
        if rv <= self._tombstones.get(name, -1):
            return
        old = self.objects.get(name)
        if old is not None and rv_of(old) >= rv:
            return
        if terminating(obj):
            # Deleted, waiting for a finalizer (the operator removes LiteLLM access first): to SCIM
            # clients the resource is gone already.
            self._tombstones[name] = rv
            if old is not None:
                del self.objects[name]
                self._notify(name, old, None)
            return
        self._tombstones.pop(name, None)
        obj = self._strip(obj)
        self.objects.put(name, obj)
        self._notify(name, old, obj)

    def _notify(self, name: str, old: Obj | None, new: Obj | None) -> None:
        for listener in self.listeners:
            listener(name, old, new)

    def _advance(self, rv: int) -> None:
        if rv > self.rv:
            self.rv = rv
        if self.rv > self.confirmed:
            self.confirmed = self.rv
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- freshness ------------------------------------------------------------------------------
    async def wait_for(self, revision: int, quiet: float, max_wait: float) -> None:
        """Return once this copy includes every change up to ``revision``.

        The watch reaching ``revision`` proves it. A collection nobody wrote to has no event to
        deliver, so its watch never moves: when no event arrived for ``quiet`` seconds after the
        question was asked (the API server delivers a committed change to open watches within
        milliseconds), the copy is taken as current up to ``revision``. ``quiet`` grows to twice the
        slowest recent delivery of this process's own writes, so a loaded API server gets more time."""
        if self.confirmed >= revision:
            return
        if self.lags:
            quiet = min(max(quiet, 2 * max(self.lags)), max_wait)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.rv < revision:
            now = loop.time()
            idle = now - max(self._last_event, start)
            if idle >= quiet or now - start >= max_wait:
                break
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), quiet - idle)
        if revision > self.confirmed:
            self.confirmed = revision
