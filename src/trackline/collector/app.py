"""The collector's HTTP API as a Starlette app: the Tracking API ingest routes, the read API,
the live stream of new events, and JSON error answers for everything else."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from trackline.collector import browser, debugger
from trackline.collector.access import WriteKeys, basic_auth_user, is_loopback
from trackline.collector.cors import AllowedOrigins, CorsMiddleware
from trackline.collector.ingest import (
    MAX_REQUEST_BYTES,
    MESSAGE_TYPES,
    SHORT_TYPES,
    BodyReader,
    RequestRejected,
    format_timestamp,
    is_gzip,
    parse_batch,
    parse_single,
    parse_timestamp,
    process,
)
from trackline.collector.live import Lagged, LiveEvent
from trackline.collector.store import EventQuery, StorageError, Store, open_store

logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS: Final = 2
#: Rows waiting for the writer beyond which new requests are shed with 503: bounds memory
#: and how long an accepted request can wait for its commit (a few seconds of work).
MAX_PENDING_ROWS: Final = 100_000
#: Ingest requests being read, decoded and committed at once (each body up to 500 KB);
#: beyond, 503, so a flood of large bodies cannot take all memory.
MAX_REQUESTS_IN_FLIGHT: Final = 256
#: `GET /api/events` returns at most this many events.
MAX_EVENTS_LIMIT: Final = 10_000
#: An idle live stream sends a comment this often, so proxies and browsers keep it open.
KEEPALIVE_SECONDS: Final = 15.0

_JSON: Final = "application/json"


def _json(
    document: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(document), status, headers, _JSON)


def _error(
    status: int, code: str, message: str, *, close: bool = False, retry_after: bool = False
) -> Response:
    headers = {}
    if close:
        headers["Connection"] = "close"
    if retry_after:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="trackline"'
    return _json({"code": code, "message": message}, status, headers)


def _flag(value: str | None) -> bool:
    """A yes/no query parameter: absent, empty, `0` or `false` is no; `1` or `true` is yes."""
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ValueError("must be 1 or 0 (true or false)")


def _unauthorized(key: str | None) -> RequestRejected:
    if not key:
        return RequestRejected(
            401, "unauthorized", "no write key: send it as the Basic user name or as writeKey"
        )
    return RequestRejected(401, "unauthorized", "unknown write key")


class _Collector:
    """The state the routes share: the store, the accepted keys, the deadlines."""

    def __init__(
        self,
        database: str | os.PathLike[str] | Store,
        write_keys: Iterable[str],
        body_timeout: float,
        lock_timeout: float,
    ) -> None:
        self._database = database
        self._storage = None if isinstance(database, str | os.PathLike) else database
        self._lock_timeout = lock_timeout
        self.keys = WriteKeys(write_keys)
        self.body_timeout = body_timeout
        self._in_flight = 0

    @property
    def storage(self) -> Store:
        if self._storage is None:
            raise RuntimeError("the collector app has not started (no lifespan startup)")
        return self._storage

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the store when the app owns it (created from a path), close it at shutdown."""
        owned = None
        if self._storage is None:
            assert isinstance(self._database, str | os.PathLike)
            owned = self._storage = open_store(self._database, lock_timeout=self._lock_timeout)
        try:
            yield
        finally:
            if owned is not None:
                owned.hub.close()
                await run_in_threadpool(owned.close)

    # -- ingest --------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        reader = BodyReader(gzip=is_gzip(request.headers.get("content-encoding")))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            raise RequestRejected(
                413, "body_too_large", f"the request body is over {MAX_REQUEST_BYTES} bytes"
            )
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    reader.feed(chunk)
        except TimeoutError:
            raise RequestRejected(
                408, "request_timeout", f"the body did not arrive within {self.body_timeout} s"
            ) from None
        return reader.finish()

    async def ingest(
        self, request: Request, route_type: str | None, browser: bool = False
    ) -> Response:
        """`POST /v1/batch` and `/v1/import` (`route_type` None), or a single-message route
        (`/v1/track`, ...) whose type is `route_type`. `browser` marks analytics.js's routes
        (`/v1/b`, `/v1/t`, ...), whose messages get the sender's address as `context.ip`
        when they carry none."""
        if self._in_flight >= MAX_REQUESTS_IN_FLIGHT:
            return _error(503, "overloaded", "too many requests in progress", retry_after=True)
        self._in_flight += 1
        try:
            return await self._ingest(request, route_type, browser)
        finally:
            self._in_flight -= 1

    async def _ingest(self, request: Request, route_type: str | None, browser: bool) -> Response:
        received_at = datetime.now(UTC)
        try:
            header = request.headers.get("authorization")
            try:
                header_key = basic_auth_user(header) if header else None
            except ValueError as exc:
                raise RequestRejected(401, "unauthorized", str(exc)) from None
            body = await self._read_body(request)
            if header_key is not None and not self.keys.accepts(header_key):
                raise _unauthorized(header_key)
            envelope = parse_batch(body) if route_type is None else parse_single(body, route_type)
            key = header_key if header_key is not None else envelope.write_key
            if key is None or not self.keys.accepts(key):
                raise _unauthorized(key)
            ip = request.client.host if browser and request.client else None
            processed = process(envelope, source=key, received_at=received_at, ip=ip)
        except RequestRejected as exc:
            # A slow client is let go; an unread rest of a body refused for another reason is
            # discarded by the server (see server.py), so the client gets to read the answer.
            return _error(exc.status, exc.code, exc.message, close=exc.status == 408)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        rejected = [
            {"index": r.index, "code": r.code, "message": r.message} for r in processed.rejections
        ]
        accepted = duplicates = 0
        if processed.rows or rejected:
            storage = self.storage
            if storage.pending_rows > MAX_PENDING_ROWS:
                return _error(503, "overloaded", "too many events waiting", retry_after=True)
            try:
                async with asyncio.timeout(self._lock_timeout + 10.0):
                    result = await storage.submit(processed.rows, len(rejected))
            except (StorageError, TimeoutError) as exc:
                message = str(exc) or "the store did not commit in time"
                return _error(503, "storage_unavailable", message, retry_after=True)
            accepted, duplicates = result.accepted, result.duplicates
        return _json({"accepted": accepted, "duplicates": duplicates, "rejected": rejected})

    # -- read ----------------------------------------------------------------------------

    async def list_events(self, request: Request) -> Response:
        """`GET /api/events?type=&user_id=&anonymous_id=&event=&source=&q=&since=&limit=`;
        `meta=1` wraps each message with its row id and source (see `Store.events`)."""
        params = request.query_params
        try:
            meta = _flag(params.get("meta"))
        except ValueError as exc:
            return _error(400, "invalid_parameter", f"meta {exc}")
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            return _error(
                400, "invalid_parameter", f"limit must be a whole number 1-{MAX_EVENTS_LIMIT}"
            )
        kind = params.get("type") or None
        if kind is not None and kind not in MESSAGE_TYPES:
            return _error(400, "invalid_parameter", f"type must be one of {sorted(MESSAGE_TYPES)}")
        since = None
        try:
            moment = parse_timestamp(params.get("since") or None)
        except ValueError as exc:
            return _error(400, "invalid_parameter", f"since: {exc}")
        if moment is not None:
            since = format_timestamp(moment)
        query = EventQuery(
            type=kind,
            user_id=params.get("user_id") or None,
            anonymous_id=params.get("anonymous_id") or None,
            event=params.get("event") or None,
            source=params.get("source") or None,
            q=params.get("q") or None,
            since=since,
            limit=limit,
        )
        events = await run_in_threadpool(functools.partial(self.storage.events, meta=meta), query)
        return Response(b'{"events":' + events + b"}", media_type=_JSON)

    async def get_event(self, request: Request) -> Response:
        """`GET /api/events/{message_id}`."""
        message_id = request.path_params["message_id"]
        body = await run_in_threadpool(self.storage.event, message_id)
        if body is None:
            return _error(404, "not_found", f"no event with messageId {message_id!r}")
        return Response(body, media_type=_JSON)

    async def clear_events(self, request: Request) -> Response:
        """`DELETE /api/events`: only from this machine, since it destroys data."""
        client = request.client.host if request.client else None
        if not is_loopback(client):
            return _error(403, "forbidden", "the store can only be cleared from this machine")
        try:
            deleted = await run_in_threadpool(self.storage.clear, self._lock_timeout + 10.0)
        except (StorageError, TimeoutError) as exc:
            return _error(503, "storage_unavailable", str(exc), retry_after=True)
        return _json({"deleted": deleted})

    async def stats(self, request: Request) -> Response:
        """`GET /api/stats`."""
        stats = await run_in_threadpool(self.storage.stats)
        return _json(
            {
                "events": stats.events,
                "by_type": stats.by_type,
                "by_source": stats.by_source,
                "duplicates": stats.duplicates,
                "rejected": stats.rejected,
            }
        )

    async def health(self, request: Request) -> Response:
        """`GET /healthz`: 200 when the store takes a write now, else 503 (for load balancers)."""
        try:
            async with asyncio.timeout(self._lock_timeout + 5.0):
                await self.storage.submit([])
        except (StorageError, TimeoutError) as exc:
            message = str(exc) or "the store did not answer in time"
            return _error(503, "storage_unavailable", message, retry_after=True)
        return _json({"status": "ok"})

    async def stream(self, request: Request) -> Response:
        """`GET /api/stream`: server-sent events, one per newly stored message (`id:` is its
        row id, `data:` the stored message, or with `meta=1` the message wrapped as in
        `GET /api/events?meta=1`); `event: lagged` when some were skipped."""
        try:
            meta = _flag(request.query_params.get("meta"))
        except ValueError as exc:
            return _error(400, "invalid_parameter", f"meta {exc}")
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
                        yield b": keep-alive\n\n"
                    else:
                        yield b"".join(frame(event) for event in news)
            finally:
                subscription.close()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _frame(event: LiveEvent) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (event.id, event.body.encode())


def _meta_frame(event: LiveEvent) -> bytes:
    return b'id: %d\ndata: {"id":%d,"source":%s,"message":%s}\n\n' % (
        event.id,
        event.id,
        orjson.dumps(event.source),
        event.body.encode(),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    document = {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}
    return Response(orjson.dumps(document), exc.status_code, exc.headers, _JSON)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal_error", "the collector failed; see its log")


#: The ingest routes by path: the message type a single-message route implies (None for a
#: batch), and whether it is one of analytics.js's short routes.
INGEST_ROUTES: Final[dict[str, tuple[str | None, bool]]] = {
    "/v1/batch": (None, False),
    "/v1/import": (None, False),
    **{f"/v1/{kind}": (kind, False) for kind in sorted(MESSAGE_TYPES)},
    "/v1/b": (None, True),
    **{f"/v1/{letter}": (kind, True) for letter, kind in sorted(SHORT_TYPES.items())},
}


def cross_origin_method(path: str) -> str | None:
    """The method a path takes from pages at allowed origins: POST for ingest, GET for the
    analytics.js settings; None for every other path (closed to other origins)."""
    if path in INGEST_ROUTES:
        return "POST"
    if browser.is_settings_path(path):
        return "GET"
    return None


def create_app(
    database: str | os.PathLike[str] | Store,
    *,
    write_keys: Iterable[str] = (),
    body_timeout: float = 30.0,
    lock_timeout: float = 5.0,
    allow_origins: Iterable[str] = (),
    analytics_js: str | os.PathLike[str] | None = None,
) -> Starlette:
    """The collector as an ASGI app.

    `database` is a SQLite file path (the app opens it at startup and closes it at shutdown)
    or an open `Store` the caller owns. With `write_keys`, only those keys may write (401
    otherwise); with none, any non-empty key may, and it is recorded as the source. A request
    body must arrive within `body_timeout` seconds (408 otherwise). A commit waits
    `lock_timeout` seconds for a lock held elsewhere before the request gets 503.

    Pages at `allow_origins` (`"https://shop.example"`, or `"*"` for any) may send events and
    read the analytics.js settings from a browser (CORS). `analytics_js` is a file served as
    `/analytics.js/v1/{writeKey}/analytics.min.js` (see `browser.py`).
    """
    origins = AllowedOrigins(allow_origins)
    collector = _Collector(database, write_keys, body_timeout, lock_timeout)
    routes = [
        Route(
            path,
            functools.partial(collector.ingest, route_type=kind, browser=short),
            methods=["POST"],
        )
        for path, (kind, short) in INGEST_ROUTES.items()
    ]
    routes += browser.routes(collector.keys, analytics_js)
    routes += [
        Route("/api/events", collector.list_events, methods=["GET"]),
        Route("/api/events", collector.clear_events, methods=["DELETE"]),
        Route("/api/events/{message_id:path}", collector.get_event, methods=["GET"]),
        Route("/api/stats", collector.stats, methods=["GET"]),
        Route("/api/stream", collector.stream, methods=["GET"]),
        Route("/healthz", collector.health, methods=["GET"]),
        *debugger.routes(),
    ]
    handlers: dict[Any, Any] = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=collector.lifespan,
        middleware=[Middleware(CorsMiddleware, origins=origins, method_of=cross_origin_method)],
    )
    app.state.collector = collector
    return app
