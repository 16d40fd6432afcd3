"""The read API over HTTP: the listing of stored events (streamed), one event, the totals,
the live stream, and clearing the store.

Every route checks the read rule first (`access.reads`: the read token, else loopback only)
and holds a place in a gate while it works (`limits`): a listing holds a database connection
until its last piece is sent, a live stream its subscription until it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable, Generator
from typing import Final

import anyio
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from trackline.collector import answers, cursor, limits
from trackline.collector.access import Origins, ReadAccess, caller, is_loopback
from trackline.collector.ingest import (
    MESSAGE_TYPES,
    NO_NUL,
    RequestRejected,
    format_timestamp,
    parse_timestamp,
)
from trackline.collector.live import Lagged, LiveEvent
from trackline.collector.store import EventQuery, ReadTooCostly, StorageError, Store

logger = logging.getLogger(__name__)

#: `GET /api/events` returns at most this many events a page.
MAX_EVENTS_LIMIT: Final = 10_000
#: The media type of `GET /api/events?format=ndjson`.
NDJSON: Final = "application/x-ndjson"
#: Longest `q=` text searched for.
MAX_QUERY_CHARS: Final = 256
#: An idle live stream sends a comment this often, so proxies and browsers keep it open.
KEEPALIVE_SECONDS: Final = 15.0


class Reads:
    """The read routes of one collector; `store` gives the store once it is open."""

    def __init__(
        self,
        store: Callable[[], Store],
        reads: ReadAccess,
        origins: Origins,
        lock_timeout: float,
    ) -> None:
        self._store = store
        self.reads = reads
        self.origins = origins
        self._lock_timeout = lock_timeout
        self._read_gate = limits.Gate(limits.READS, limits.READS_PER_CLIENT)
        self._stream_gate = limits.Gate(limits.SUBSCRIBERS, limits.SUBSCRIBERS_PER_CLIENT)

    @property
    def storage(self) -> Store:
        return self._store()

    def read_refusal(self, request: Request) -> RequestRejected | None:
        """Why `request` may not read (see `access.reads`), or None."""
        who = caller(request)
        return self.reads.refusal(who.headers, who.request.cookies, who.client)

    @contextlib.asynccontextmanager
    async def _reading(self, request: Request) -> AsyncIterator[Response | None]:
        """Checks a read and holds a read place for the `with` block; yields the refusal to
        answer instead, or None to go on."""
        refusal = self.read_refusal(request)
        if refusal is not None:
            yield answers.rejected(refusal, challenge="Bearer")
            return
        client = caller(request).address
        with self._read_gate.place(client) as entered:
            yield None if entered else answers.overloaded("reads")

    def _query(self, request: Request) -> _Listing:
        """The filters and paging of `GET /api/events`; raises 400 naming a bad one."""
        params = request.query_params
        try:
            meta = answers.flag(params.get("meta"))
        except ValueError as exc:
            raise RequestRejected(400, "invalid_parameter", f"meta {exc}") from None
        form = params.get("format") or "json"
        if form not in ("json", "ndjson"):
            raise RequestRejected(400, "invalid_parameter", "format must be json or ndjson")
        export = form == "ndjson"
        total: int | None = None
        if not export or "limit" in params:
            try:
                limit = int(params.get("limit", "100"))
            except ValueError:
                limit = 0
            most = None if export else MAX_EVENTS_LIMIT
            if limit < 1 or (most is not None and limit > most):
                shown = "a whole number from 1" if most is None else f"a whole number 1-{most}"
                raise RequestRejected(400, "invalid_parameter", f"limit must be {shown}")
            total = limit if export else None
        else:
            limit = MAX_EVENTS_LIMIT
        order = params.get("order") or None
        if order not in (None, "desc", "asc"):
            raise RequestRejected(400, "invalid_parameter", "order must be desc or asc")
        kind = params.get("type") or None
        if kind is not None and kind not in MESSAGE_TYPES:
            message = f"type must be one of {sorted(MESSAGE_TYPES)}"
            raise RequestRejected(400, "invalid_parameter", message)
        q = _text(params, "q")
        if q is not None and len(q) > MAX_QUERY_CHARS:
            message = f"q must be at most {MAX_QUERY_CHARS} characters"
            raise RequestRejected(400, "invalid_parameter", message)
        try:
            moment = parse_timestamp(params.get("since") or None)
        except ValueError as exc:
            raise RequestRejected(400, "invalid_parameter", f"since: {exc}") from None
        query = EventQuery(
            type=kind,
            user_id=_text(params, "user_id"),
            anonymous_id=_text(params, "anonymous_id"),
            event=_text(params, "event"),
            source=_text(params, "source"),
            q=q,
            since=None if moment is None else format_timestamp(moment),
            limit=min(limit, MAX_EVENTS_LIMIT),
            ascending=order == "asc",
        )
        if text := params.get("cursor"):  # empty: none, as for the filters
            try:
                query = cursor.apply(query, text)
            except ValueError as exc:
                raise RequestRejected(400, "invalid_parameter", f"cursor {exc}") from None
            if order is not None and query.ascending != (order == "asc"):
                made = "asc" if query.ascending else "desc"
                message = f"cursor was made for order={made}: leave order out, or match it"
                raise RequestRejected(400, "invalid_parameter", message)
        return _Listing(query, meta, export, total)

    async def list_events(self, request: Request) -> Response:
        """`GET /api/events?type=&user_id=&anonymous_id=&event=&source=&q=&since=&limit=
        &order=&cursor=&format=`; `meta=1` wraps each message with its row id and source (see
        `Store.events`). One page, with `next` (the cursor of the page after it, or null at
        the end); with `format=ndjson`, every page, one message a line (`_export`). The answer
        is streamed: the store hands it over in pieces (`Store.event_pieces`)."""
        refusal = self.read_refusal(request)
        if refusal is not None:
            return answers.rejected(refusal, challenge="Bearer")
        try:
            listing = self._query(request)
        except RequestRejected as exc:
            return answers.rejected(exc)
        client = caller(request).address
        if not self._read_gate.enter(client):
            return answers.overloaded("reads")
        query = listing.query
        if listing.total is not None:
            query = dataclasses.replace(query, limit=min(query.limit, listing.total))
        pieces = self.storage.event_pieces(query, meta=listing.meta, lines=listing.export)
        try:
            first = await run_in_threadpool(_step, pieces)
        except BaseException as exc:
            self._read_gate.leave(client)
            await run_in_threadpool(pieces.close)
            if isinstance(exc, ReadTooCostly):
                return answers.error(
                    400,
                    "query_too_costly",
                    "this listing took too long; narrow it with type, user_id, event or since",
                )
            if isinstance(exc, StorageError):
                return answers.unavailable()
            raise
        released = functools.partial(self._read_gate.leave, client)
        if listing.export:
            walk = _export(first, pieces, listing, self.storage, released)
            return StreamingResponse(walk, media_type=NDJSON)
        return StreamingResponse(_page(first, pieces, released), media_type=answers.JSON)

    async def get_event(self, request: Request) -> Response:
        """`GET /api/events/{message_id}`."""
        async with self._reading(request) as refused:
            if refused is not None:
                return refused
            message_id = request.path_params["message_id"]
            if (refusal := message_id_refusal(message_id)) is not None:
                return refusal
            body = await run_in_threadpool(self.storage.event, message_id)
        if body is None:
            return answers.error(404, "not_found", f"no event with messageId {message_id[:100]!r}")
        return Response(body, media_type=answers.JSON)

    def local_admin_refusal(self, request: Request, what: str) -> Response | None:
        """The answer refusing an action that changes what the collector holds or does
        (clearing, a replay), or None: it takes a reader on this machine, from the collector's
        own page or an allowed origin (never `*`). `what` completes "... only from this
        machine"."""
        refusal = self.read_refusal(request)
        if refusal is not None:
            return answers.rejected(refusal, challenge="Bearer")
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin, admin=True):
            return answers.forbidden_origin()
        if not is_loopback(who.client):
            return answers.error(403, "forbidden", f"{what} only from this machine")
        return None

    async def clear_events(self, request: Request) -> Response:
        """`DELETE /api/events`: a reader on this machine, from the collector's own page or an
        allowed origin (never `*`), since it destroys data."""
        refused = self.local_admin_refusal(request, "the store can be cleared")
        if refused is not None:
            return refused
        try:
            deleted = await run_in_threadpool(self.storage.clear, self._lock_timeout + 10.0)
        except (StorageError, TimeoutError):
            return answers.unavailable()
        return answers.json_answer({"deleted": deleted})

    async def stats(self, request: Request) -> Response:
        """`GET /api/stats`."""
        async with self._reading(request) as refused:
            if refused is not None:
                return refused
            stats = await run_in_threadpool(self.storage.stats)
        return answers.json_answer(
            {
                "events": stats.events,
                "by_type": stats.by_type,
                "by_source": stats.by_source,
                "duplicates": stats.duplicates,
                "rejected": stats.rejected,
                "unroutable": stats.unroutable,
            }
        )

    async def stream(self, request: Request) -> Response:
        """`GET /api/stream`: server-sent events, one per newly stored message (`id:` is its
        row id, `data:` the stored message, or with `meta=1` the message wrapped as in
        `GET /api/events?meta=1`); `event: lagged` when some were skipped."""
        refusal = self.read_refusal(request)
        if refusal is not None:
            return answers.rejected(refusal, challenge="Bearer")
        try:
            meta = answers.flag(request.query_params.get("meta"))
        except ValueError as exc:
            return answers.error(400, "invalid_parameter", f"meta {exc}")
        client = caller(request).address
        if not self._stream_gate.enter(client):
            return answers.overloaded("live streams")
        frame = _meta_frame if meta else _frame
        subscription = self.storage.hub.subscribe()

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                while True:
                    news = await subscription.next(KEEPALIVE_SECONDS)
                    if news is None:
                        return
                    if isinstance(news, Lagged):
                        yield b'event: lagged\ndata: {"missed":%d}\n\n' % news.missed
                    elif not news:
                        # A server that promises to raise on a send to a gone client (ASGI
                        # 2.4) and does not would keep this stream forever: ask, at least here.
                        if await request.is_disconnected():
                            return
                        yield b": keep-alive\n\n"
                    else:
                        yield b"".join(frame(event) for event in news)
            finally:
                subscription.close()
                self._stream_gate.leave(client)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _text(params: QueryParams, name: str) -> str | None:
    """The text filter `name`, None when absent or empty; raises 400 for a NUL. Ingest keeps
    NUL out of the columns these filters compare (`ingest.INDEXED_FIELDS`) and the stored JSON
    escapes it, so none could match, and PostgreSQL cannot be sent one: a 400 naming the
    parameter, on every store alike, rather than a read that fails on one of them."""
    value = params.get(name) or None
    if value is not None and "\x00" in value:
        raise RequestRejected(400, "invalid_parameter", f"{name} {NO_NUL}")
    return value


def message_id_refusal(message_id: str) -> Response | None:
    """The 400 for a messageId taken from a path that holds a NUL, or None. No store is asked:
    ingest refuses such a messageId on every store and PostgreSQL cannot be sent one, and a
    400 says the id itself is wrong where a 404 would say it is not stored (yet)."""
    if "\x00" in message_id:
        return answers.error(400, "invalid_parameter", f"messageId {NO_NUL}")
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Listing:
    """What `GET /api/events` asked for: the first page's query, `meta`, whether every page
    goes out as NDJSON (`export`), and then at most how many events (`total`, None: all)."""

    query: EventQuery
    meta: bool
    export: bool
    total: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Done:
    """A page's generator ended: `next` is the query of the page after it, or None."""

    next: EventQuery | None


def _step(pieces: Generator[bytes, None, EventQuery | None]) -> bytes | _Done:
    """The next piece of a page, or how the page ended (run on a worker thread)."""
    try:
        return next(pieces)
    except StopIteration as end:
        return _Done(end.value)


async def _page(
    first: bytes | _Done,
    pieces: Generator[bytes, None, EventQuery | None],
    release: functools.partial[None],
) -> AsyncIterator[bytes]:
    """A page's pieces wrapped as `{"events": [...], "next": cursor or null}`; each further
    piece is read on a worker thread when the client has taken the one before. At the end (or
    when the client went away) the read place is given back and the store's iterator closed."""
    try:
        step = first
        head = b'{"events":'
        while not isinstance(step, _Done):
            yield head + step
            head = b""
            step = await run_in_threadpool(_step, pieces)
        following = None if step.next is None else cursor.encode(step.next)
        yield head + b',"next":%s}' % orjson.dumps(following)
    finally:
        release()
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(pieces.close)


async def _export(
    first: bytes | _Done,
    pieces: Generator[bytes, None, EventQuery | None],
    listing: _Listing,
    store: Store,
    release: functools.partial[None],
) -> AsyncIterator[bytes]:
    """Every page of `listing`, one message a line, page after page: one page is read at a
    time, each in its own read (transaction) with its own time budget, so memory stays at a
    piece and neither SQLite's WAL nor PostgreSQL's vacuum waits for a long export.

    A page that fails after the answer began (too costly, the store gone) cannot change its
    status any more: the connection is broken off without the end of the chunked body, which
    a client reads as an incomplete answer, never as a complete but shorter export."""
    left = listing.total
    try:
        step = first
        while True:
            while not isinstance(step, _Done):
                if step:  # an empty page (a window without a match) has an empty piece
                    if left is not None:
                        left -= step.count(b"\n")
                    yield step
                step = await run_in_threadpool(_step, pieces)
            if step.next is None or left == 0:
                return
            limit = MAX_EVENTS_LIMIT if left is None else min(MAX_EVENTS_LIMIT, left)
            await run_in_threadpool(pieces.close)
            pieces = store.event_pieces(
                dataclasses.replace(step.next, limit=limit), meta=listing.meta, lines=True
            )
            step = await run_in_threadpool(_step, pieces)
    except (ReadTooCostly, StorageError) as exc:
        logger.warning("an export was broken off: %s", exc)
        raise
    finally:
        release()
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(pieces.close)


def _frame(event: LiveEvent) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (event.id, event.body.encode())


def _meta_frame(event: LiveEvent) -> bytes:
    return b'id: %d\ndata: {"id":%d,"source":%s,"message":%s}\n\n' % (
        event.id,
        event.id,
        orjson.dumps(event.source),
        event.body.encode(),
    )
