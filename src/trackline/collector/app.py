"""The collector's HTTP API as a Starlette app: the Tracking API ingest routes, the read API,
the live stream of new events, and JSON error answers for everything else.

Every route states who may use it. Before routing, the guard (`access.guard`) refuses a
`Host` the collector does not answer to. Ingest then checks the `Origin`, and the write key
before the body is read when it comes in a header; reads check the read token (or loopback);
clearing needs a read, the collector's own origin and this machine. What a request may hold
while it waits on the network (a body, a listing, a stream) is bounded by `limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Unpack

import anyio
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from trackline.collector import debugger, limits
from trackline.collector.access import (
    Guard,
    KeyIds,
    basic_auth_user,
    caller,
    is_loopback,
    key_problem,
)
from trackline.collector.ingest import (
    MAX_REQUEST_BYTES,
    MESSAGE_TYPES,
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
from trackline.collector.settings import CollectorSettings, SettingsOptions, settings_of
from trackline.collector.store import (
    EventQuery,
    ReadTooCostly,
    RowsRefused,
    StorageError,
    Store,
    open_store,
)

logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS: Final = 2
#: Rows waiting for the writer beyond which new requests are shed with 503: bounds memory
#: and how long an accepted request can wait for its commit (a few seconds of work).
MAX_PENDING_ROWS: Final = 100_000
#: Ingest requests being read, decoded and committed at once (each body up to 500 KB);
#: beyond, 503, so a flood of large bodies cannot take all memory.
MAX_REQUESTS_IN_FLIGHT: Final = limits.INGEST_REQUESTS
#: `GET /api/events` returns at most this many events.
MAX_EVENTS_LIMIT: Final = 10_000
#: Longest `q=` text searched for.
MAX_QUERY_CHARS: Final = 256
#: Bytes of a debugger login form read at most.
_MAX_LOGIN_BYTES: Final = 4096
#: An idle live stream sends a comment this often, so proxies and browsers keep it open.
KEEPALIVE_SECONDS: Final = 15.0

_JSON: Final = "application/json"


def _json(
    document: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(document), status, headers, _JSON)


def _error(
    status: int,
    code: str,
    message: str,
    *,
    close: bool = False,
    retry_after: bool = False,
    challenge: str = "Basic",
) -> Response:
    headers = {}
    if close:
        headers["Connection"] = "close"
    if retry_after:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status == 401:
        headers["WWW-Authenticate"] = f'{challenge} realm="trackline"'
    return _json({"code": code, "message": message}, status, headers)


def _rejected(exc: RequestRejected, challenge: str = "Basic") -> Response:
    return _error(exc.status, exc.code, exc.message, close=exc.status == 408, challenge=challenge)


def _overloaded(what: str) -> Response:
    return _error(503, "overloaded", f"too many {what} in progress", retry_after=True)


def _unavailable() -> Response:
    message = "the store cannot take writes right now; try again shortly"
    return _error(503, "storage_unavailable", message, retry_after=True)


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


def _forbidden_origin() -> Response:
    message = "requests from this web origin may not change data here (see --allow-origin)"
    return _error(403, "forbidden_origin", message)


class _Collector:
    """The state the routes share: the store, the access policies, the limits, the deadlines."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        policies = settings.policies()
        self.keys = policies.write_keys
        self.reads = policies.read_access
        self.origins = policies.origins
        self.policies = policies
        self.body_timeout = settings.body_timeout
        self._lock_timeout = settings.lock_timeout
        database = settings.database
        self._storage = None if isinstance(database, str | os.PathLike) else database
        self._key_ids: KeyIds | None = None
        self._ingest_gate = limits.Gate(limits.INGEST_REQUESTS)
        self._body_key_gate = limits.Gate(
            limits.BODY_KEY_REQUESTS, limits.BODY_KEY_REQUESTS_PER_CLIENT
        )
        self._read_gate = limits.Gate(limits.READS, limits.READS_PER_CLIENT)
        self._stream_gate = limits.Gate(limits.SUBSCRIBERS, limits.SUBSCRIBERS_PER_CLIENT)

    @property
    def storage(self) -> Store:
        if self._storage is None:
            raise RuntimeError("the collector app has not started (no lifespan startup)")
        return self._storage

    @property
    def key_ids(self) -> KeyIds:
        if self._key_ids is None:
            self._key_ids = KeyIds(self.storage.key_secret)
        return self._key_ids

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the store when the app owns it (created from a path), close it at shutdown."""
        owned = None
        if self._storage is None:
            database = self.settings.database
            assert isinstance(database, str | os.PathLike)
            owned = self._storage = open_store(database, lock_timeout=self._lock_timeout)
        if self.origins.any:
            logger.warning("allow_origins '*': every web page a browser opens may send events here")
        try:
            yield
        finally:
            if owned is not None:
                owned.hub.close()
                await run_in_threadpool(owned.close)

    # -- ingest --------------------------------------------------------------------------

    async def _read_body(self, request: Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
        reader = BodyReader(gzip=is_gzip(request.headers.get("content-encoding")), limit=limit)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestRejected(413, "body_too_large", f"the request body is over {limit} bytes")
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    reader.feed(chunk)
        except TimeoutError:
            raise RequestRejected(
                408, "request_timeout", f"the body did not arrive within {self.body_timeout} s"
            ) from None
        return reader.finish()

    def _checked_key(self, key: object) -> str:
        """`key` when it may write; raises 400 for a malformed key, 401 for a missing or
        unknown one."""
        if key is None or key == "":
            raise _unauthorized(None)
        problem = key_problem(key)
        if problem is not None:
            raise RequestRejected(400, "invalid_write_key", problem)
        assert isinstance(key, str)
        if not self.keys.accepts(key):
            raise _unauthorized(key)
        return key

    def _header_key(self, header: str | None) -> str | None:
        """The write key of a Basic `Authorization` header, checked; None without one (the
        key may then be in the body)."""
        if header is None:
            return None
        try:
            key = basic_auth_user(header)
        except ValueError as exc:
            raise RequestRejected(400, "invalid_write_key", str(exc)) from None
        return None if key is None else self._checked_key(key)

    async def ingest(self, request: Request, route_type: str | None) -> Response:
        """`POST /v1/batch` and `/v1/import` (`route_type` None), or a single-message route
        (`/v1/track`, ...) whose type is `route_type`.

        A key in the header is checked before anything is read and before the request takes
        a place: a wrong one costs nothing. A key in the body is known only once the body is
        read, so such requests wait in a pool of their own with a share per client."""
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin):
            return _forbidden_origin()
        try:
            header_key = self._header_key(who.headers.get("authorization"))
        except RequestRejected as exc:
            return _rejected(exc)
        if header_key is not None:
            gate, client = self._ingest_gate, None
        else:
            gate, client = self._body_key_gate, who.address
        with gate.place(client) as entered:
            if not entered:
                return _overloaded("requests")
            return await self._ingest(request, route_type, header_key)

    async def _ingest(
        self, request: Request, route_type: str | None, header_key: str | None
    ) -> Response:
        received_at = datetime.now(UTC)
        try:
            body = await self._read_body(request)
            envelope = parse_batch(body) if route_type is None else parse_single(body, route_type)
            key = header_key if header_key is not None else self._checked_key(envelope.write_key)
            processed = process(envelope, source=self.key_ids(key), received_at=received_at)
        except RequestRejected as exc:
            # A slow client is let go; an unread rest of a body refused for another reason is
            # discarded by the server (see server.py), so the client gets to read the answer.
            return _rejected(exc)
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
            except RowsRefused:
                return _error(400, "invalid_value", "the store cannot hold a value of this batch")
            except (StorageError, TimeoutError):
                return _unavailable()
            accepted, duplicates = result.accepted, result.duplicates
        return _json({"accepted": accepted, "duplicates": duplicates, "rejected": rejected})

    # -- read ----------------------------------------------------------------------------

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
            yield _rejected(refusal, challenge="Bearer")
            return
        client = caller(request).address
        with self._read_gate.place(client) as entered:
            yield None if entered else _overloaded("reads")

    def _query(self, request: Request) -> tuple[EventQuery, bool]:
        """The filters of `GET /api/events`; raises 400 naming a bad one."""
        params = request.query_params
        try:
            meta = _flag(params.get("meta"))
        except ValueError as exc:
            raise RequestRejected(400, "invalid_parameter", f"meta {exc}") from None
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_EVENTS_LIMIT:
            message = f"limit must be a whole number 1-{MAX_EVENTS_LIMIT}"
            raise RequestRejected(400, "invalid_parameter", message)
        kind = params.get("type") or None
        if kind is not None and kind not in MESSAGE_TYPES:
            message = f"type must be one of {sorted(MESSAGE_TYPES)}"
            raise RequestRejected(400, "invalid_parameter", message)
        q = params.get("q") or None
        if q is not None and len(q) > MAX_QUERY_CHARS:
            message = f"q must be at most {MAX_QUERY_CHARS} characters"
            raise RequestRejected(400, "invalid_parameter", message)
        try:
            moment = parse_timestamp(params.get("since") or None)
        except ValueError as exc:
            raise RequestRejected(400, "invalid_parameter", f"since: {exc}") from None
        query = EventQuery(
            type=kind,
            user_id=params.get("user_id") or None,
            anonymous_id=params.get("anonymous_id") or None,
            event=params.get("event") or None,
            source=params.get("source") or None,
            q=q,
            since=None if moment is None else format_timestamp(moment),
            limit=limit,
        )
        return query, meta

    async def list_events(self, request: Request) -> Response:
        """`GET /api/events?type=&user_id=&anonymous_id=&event=&source=&q=&since=&limit=`;
        `meta=1` wraps each message with its row id and source (see `Store.events`). The
        answer is streamed: the store hands it over in pieces (`Store.event_pieces`)."""
        try:
            query, meta = self._query(request)
        except RequestRejected as exc:
            return _rejected(exc)
        refusal = self.read_refusal(request)
        if refusal is not None:
            return _rejected(refusal, challenge="Bearer")
        client = caller(request).address
        if not self._read_gate.enter(client):
            return _overloaded("reads")
        pieces = self.storage.event_pieces(query, meta=meta)
        try:
            first = await run_in_threadpool(next, pieces)
        except BaseException as exc:
            self._read_gate.leave(client)
            await run_in_threadpool(pieces.close)
            if isinstance(exc, ReadTooCostly):
                return _error(
                    400,
                    "query_too_costly",
                    "this listing took too long; narrow it with type, user_id, event or since",
                )
            if isinstance(exc, StorageError):
                return _unavailable()
            raise
        released = functools.partial(self._read_gate.leave, client)
        return StreamingResponse(_listing(first, pieces, released), media_type=_JSON)

    async def get_event(self, request: Request) -> Response:
        """`GET /api/events/{message_id}`."""
        async with self._reading(request) as refused:
            if refused is not None:
                return refused
            message_id = request.path_params["message_id"]
            body = await run_in_threadpool(self.storage.event, message_id)
        if body is None:
            return _error(404, "not_found", f"no event with messageId {message_id[:100]!r}")
        return Response(body, media_type=_JSON)

    async def clear_events(self, request: Request) -> Response:
        """`DELETE /api/events`: a reader on this machine, from the collector's own page or an
        allowed origin (never `*`), since it destroys data."""
        refusal = self.read_refusal(request)
        if refusal is not None:
            return _rejected(refusal, challenge="Bearer")
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin, admin=True):
            return _forbidden_origin()
        if not is_loopback(who.client):
            return _error(403, "forbidden", "the store can only be cleared from this machine")
        try:
            deleted = await run_in_threadpool(self.storage.clear, self._lock_timeout + 10.0)
        except (StorageError, TimeoutError):
            return _unavailable()
        return _json({"deleted": deleted})

    async def stats(self, request: Request) -> Response:
        """`GET /api/stats`."""
        async with self._reading(request) as refused:
            if refused is not None:
                return refused
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
        """`GET /healthz`: 200 when the store takes a write now, else 503 (for load balancers).
        Open to anyone who reaches the collector: it tells nothing but that."""
        try:
            async with asyncio.timeout(self._lock_timeout + 5.0):
                await self.storage.submit([])
        except (StorageError, TimeoutError):
            return _unavailable()
        return _json({"status": "ok"})

    async def stream(self, request: Request) -> Response:
        """`GET /api/stream`: server-sent events, one per newly stored message (`id:` is its
        row id, `data:` the stored message, or with `meta=1` the message wrapped as in
        `GET /api/events?meta=1`); `event: lagged` when some were skipped."""
        try:
            meta = _flag(request.query_params.get("meta"))
        except ValueError as exc:
            return _error(400, "invalid_parameter", f"meta {exc}")
        refusal = self.read_refusal(request)
        if refusal is not None:
            return _rejected(refusal, challenge="Bearer")
        client = caller(request).address
        if not self._stream_gate.enter(client):
            return _overloaded("live streams")
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
                self._stream_gate.leave(client)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- the debugger's login ----------------------------------------------------------------

    async def page_refusal(self, request: Request) -> Response | None:
        """What `GET /` and `/debugger` answer instead of the page, or None to serve it."""
        refusal = self.read_refusal(request)
        if refusal is None:
            return None
        if refusal.status == 401:
            return debugger.login_page(failed=request.query_params.get("login") == "failed")
        return _rejected(refusal)

    async def login(self, request: Request) -> Response:
        """`POST /debugger/login` (the login page's form, `token=...`): with the right read
        token, a cookie that lets this browser read; back to the page either way (303, so a
        reload does not post again; relative, so it works under a proxy's path prefix)."""
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin, admin=True):
            return _forbidden_origin()
        if not self.reads.token_required:
            return RedirectResponse("../", status_code=303)
        try:
            body = await self._read_body(request, limit=_MAX_LOGIN_BYTES)
        except RequestRejected as exc:
            return _rejected(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        if not self.reads.matches(form.get("token", [""])[0]):
            return RedirectResponse("../?login=failed", status_code=303)
        answer = RedirectResponse("../", status_code=303)
        answer.headers.append("Set-Cookie", self.reads.cookie(secure=who.secure))
        return answer


async def _listing(
    first: bytes, pieces: Generator[bytes, None, None], release: functools.partial[None]
) -> AsyncIterator[bytes]:
    """A listing's pieces wrapped as `{"events": [...]}`; each further piece is read on a
    worker thread when the client has taken the one before. At the end (or when the client
    went away) the read place is given back and the store's iterator closed."""
    try:
        yield b'{"events":' + first
        while (piece := await run_in_threadpool(next, pieces, None)) is not None:
            yield piece
        yield b"}"
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    document = {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}
    return Response(orjson.dumps(document), exc.status_code, exc.headers, _JSON)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Answered outside the guard (Starlette's outermost layer), so it adds nosniff itself.
    answer = _error(500, "internal_error", "the collector failed; see its log")
    answer.headers["X-Content-Type-Options"] = "nosniff"
    return answer


def create_app(
    database: str | os.PathLike[str] | Store | CollectorSettings,
    /,
    **options: Unpack[SettingsOptions],
) -> Starlette:
    """The collector as an ASGI app, for any ASGI server.

    `database` is a SQLite file path (the app opens it at startup and closes it at shutdown),
    an open `Store` the caller owns, or `CollectorSettings`; keyword `options` set (or
    override) the settings' fields. Under a server of your own, turn its proxy headers off
    (uvicorn: `proxy_headers=False`): `trusted_proxies` is how the collector believes them.
    The header and send deadlines are carried by trackline's own server (`start`, `run`).
    """
    settings = settings_of(database, options)
    collector = _Collector(settings)
    routes = [
        Route(f"/v1/{path}", functools.partial(collector.ingest, route_type=kind), methods=["POST"])
        for path, kind in [("batch", None), ("import", None), *((t, t) for t in MESSAGE_TYPES)]
    ]
    routes += [
        Route("/api/events", collector.list_events, methods=["GET"]),
        Route("/api/events", collector.clear_events, methods=["DELETE"]),
        Route("/api/events/{message_id:path}", collector.get_event, methods=["GET"]),
        Route("/api/stats", collector.stats, methods=["GET"]),
        Route("/api/stream", collector.stream, methods=["GET"]),
        Route("/healthz", collector.health, methods=["GET"]),
        *debugger.routes(collector.page_refusal, collector.login),
    ]
    handlers: dict[Any, Any] = {HTTPException: _http_error, Exception: _internal_error}
    policies = collector.policies
    guard = Middleware(Guard, hosts=policies.hosts, clients=policies.clients)
    app = Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers=handlers,
        lifespan=collector.lifespan,
    )
    app.state.collector = collector
    return app
