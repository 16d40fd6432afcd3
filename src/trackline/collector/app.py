"""The collector's HTTP API as a Starlette app: the Tracking API ingest routes, the read API,
the live stream of new events, and JSON error answers for everything else.

Every route states who may use it. Before routing, the guard (`access.guard`) refuses a
`Host` the collector does not answer to. Ingest then checks the `Origin`, and the write key
before the body is read when it comes in a header; reads check the read token (or loopback);
clearing needs a read, the collector's own origin and this machine. What a request may hold
while it waits on the network (a body, a listing, a stream) is bounded by `limits`.

With destinations, ingest also queues each event's delivery jobs with it, and the app runs
their routers while it serves (`trackline.collector.destinations`, `routes_destinations.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final, Unpack

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from trackline.collector import answers, browser, debugger, limits, routes_destinations
from trackline.collector.access import (
    Guard,
    KeyIds,
    basic_auth_user,
    caller,
    key_problem,
)
from trackline.collector.cors import CorsMiddleware
from trackline.collector.destinations import Destinations
from trackline.collector.ingest import (
    MAX_REQUEST_BYTES,
    MESSAGE_TYPES,
    SHORT_TYPES,
    BodyReader,
    RequestRejected,
    is_gzip,
    parse_batch,
    parse_single,
    process,
)
from trackline.collector.reading import Reads
from trackline.collector.settings import CollectorSettings, SettingsOptions, settings_of
from trackline.collector.store import (
    RowsRefused,
    StorageError,
    Store,
    open_store,
)

logger = logging.getLogger(__name__)

#: Rows waiting for the writer beyond which new requests are shed with 503: bounds memory
#: and how long an accepted request can wait for its commit (a few seconds of work).
MAX_PENDING_ROWS: Final = 100_000
#: Bytes of a debugger login form read at most.
_MAX_LOGIN_BYTES: Final = 4096
#: Ingest requests in progress from which the destinations' routers yield to ingest.
INGEST_BUSY_REQUESTS: Final = 2


def _unauthorized(key: str | None) -> RequestRejected:
    if not key:
        return RequestRejected(
            401, "unauthorized", "no write key: send it as the Basic user name or as writeKey"
        )
    return RequestRejected(401, "unauthorized", "unknown write key")


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
        self.read_api = Reads(lambda: self.storage, self.reads, self.origins, self._lock_timeout)
        self.destinations = Destinations(settings.destinations)
        self._route = self.destinations.routing.route if self.destinations else None
        self._ingesting = 0
        self.destinations.ingest_busy = lambda: self._ingesting >= INGEST_BUSY_REQUESTS

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
            logger.warning(
                "allow_origins '*': pages at every origin a browser opens may send events"
            )
        if self.policies.hosts.any:
            logger.warning(
                "allow_hosts '*': requests naming any host are answered (no defence "
                "against DNS rebinding unless a proxy in front checks names)"
            )
        self.destinations.start(self._storage)
        try:
            yield
        finally:
            await run_in_threadpool(self.destinations.stop)
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

    async def ingest(
        self, request: Request, route_type: str | None, browser: bool = False
    ) -> Response:
        """`POST /v1/batch` and `/v1/import` (`route_type` None), or a single-message route
        (`/v1/track`, ...) whose type is `route_type`. `browser` marks analytics.js's routes
        (`/v1/b`, `/v1/t`, ...), whose messages get the sender's address as `context.ip`
        when they carry none.

        A key in the header is checked before anything is read and before the request takes
        a place: a wrong one costs nothing. A key in the body is known only once the body is
        read, so such requests wait in a pool of their own with a share per client."""
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin):
            return answers.forbidden_origin()
        try:
            header_key = self._header_key(who.headers.get("authorization"))
        except RequestRejected as exc:
            return answers.rejected(exc)
        if header_key is not None:
            gate, client = self._ingest_gate, None
        else:
            gate, client = self._body_key_gate, who.address
        if not gate.enter(client):
            return answers.overloaded("requests")
        try:
            ip = who.address if browser else None
            return await self._ingest(request, route_type, header_key, ip)
        finally:
            gate.leave(client)

    async def _ingest(
        self, request: Request, route_type: str | None, header_key: str | None, ip: str | None
    ) -> Response:
        received_at = datetime.now(UTC)
        self._ingesting += 1
        try:
            return await self._store_events(request, route_type, header_key, ip, received_at)
        finally:
            self._ingesting -= 1

    async def _store_events(
        self,
        request: Request,
        route_type: str | None,
        header_key: str | None,
        ip: str | None,
        received_at: datetime,
    ) -> Response:
        try:
            body = await self._read_body(request)
            envelope = parse_batch(body) if route_type is None else parse_single(body, route_type)
            key = header_key if header_key is not None else self._checked_key(envelope.write_key)
            source = self.key_ids(key)
            processed = process(
                envelope, source=source, received_at=received_at, ip=ip, route=self._route
            )
        except RequestRejected as exc:
            # A slow client is let go; an unread rest of a body refused for another reason is
            # discarded by the server (see server.py), so the client gets to read the answer.
            return answers.rejected(exc)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        rejected = [
            {"index": r.index, "code": r.code, "message": r.message} for r in processed.rejections
        ]
        accepted = duplicates = 0
        if processed.rows or rejected:
            storage = self.storage
            if storage.pending_rows > MAX_PENDING_ROWS:
                return answers.error(503, "overloaded", "too many events waiting", retry_after=True)
            try:
                async with asyncio.timeout(self._lock_timeout + 10.0):
                    result = await storage.submit(processed.rows, len(rejected), processed.routes)
            except RowsRefused:
                return answers.error(
                    400, "invalid_value", "the store cannot hold a value of this batch"
                )
            except (StorageError, TimeoutError):
                return answers.unavailable()
            accepted, duplicates = result.accepted, result.duplicates
            if processed.routes and accepted:
                self.destinations.wake(processed.routes)
        return answers.json_answer(
            {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
        )

    # -- read ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """`GET /healthz`: 200 when the store takes a write now, else 503 (for load balancers).
        Open to anyone who reaches the collector: it tells nothing but that."""
        try:
            async with asyncio.timeout(self._lock_timeout + 5.0):
                await self.storage.submit([])
        except (StorageError, TimeoutError):
            return answers.unavailable()
        return answers.json_answer({"status": "ok"})

    # -- the debugger's login ----------------------------------------------------------------

    async def page_refusal(self, request: Request) -> Response | None:
        """What `GET /` and `/debugger` answer instead of the page, or None to serve it."""
        refusal = self.read_api.read_refusal(request)
        if refusal is None:
            return None
        if refusal.status == 401:
            return debugger.login_page(failed=request.query_params.get("login") == "failed")
        return answers.rejected(refusal)

    async def login(self, request: Request) -> Response:
        """`POST /debugger/login` (the login page's form, `token=...`): with the right read
        token, a cookie that lets this browser read; back to the page either way (303, so a
        reload does not post again; relative, so it works under a proxy's path prefix)."""
        who = caller(request)
        if not self.origins.permits(who.headers, who.origin, admin=True):
            return answers.forbidden_origin()
        if not self.reads.token_required:
            return RedirectResponse("../", status_code=303)
        try:
            body = await self._read_body(request, limit=_MAX_LOGIN_BYTES)
        except RequestRejected as exc:
            return answers.rejected(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        if not self.reads.matches(form.get("token", [""])[0]):
            return RedirectResponse("../?login=failed", status_code=303)
        answer = RedirectResponse("../", status_code=303)
        answer.headers.append("Set-Cookie", self.reads.cookie(secure=who.secure))
        return answer


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    document = {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}
    return answers.json_answer(document, exc.status_code, exc.headers)


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    # A read the store could not answer (PostgreSQL gone, locked or silent): not a failure of
    # the collector's, and worth trying again shortly.
    message = "the store cannot be read right now; try again shortly"
    return answers.error(503, "storage_unavailable", message, retry_after=True)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Answered outside the guard (Starlette's outermost layer), so it adds nosniff itself.
    answer = answers.error(500, "internal_error", "the collector failed; see its log")
    answer.headers["X-Content-Type-Options"] = "nosniff"
    return answer


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
    database: str | os.PathLike[str] | Store | CollectorSettings,
    /,
    **options: Unpack[SettingsOptions],
) -> Starlette:
    """The collector as an ASGI app, for any ASGI server.

    `database` is a SQLite file path or a `postgresql://` URL (the app opens it at startup and
    closes it at shutdown), an open `Store` the caller owns, or `CollectorSettings`; keyword
    `options` set (or override) the settings' fields. Pages at `allow_origins` may send
    events and read the analytics.js settings from a browser (CORS); `analytics_js` is a file
    served as `/analytics.js/v1/{writeKey}/analytics.min.js` (see `browser.py`). Under a
    server of your own, turn its proxy headers off (uvicorn: `proxy_headers=False`):
    `trusted_proxies` is how the collector believes them.
    The header and send deadlines are carried by trackline's own server (`start`, `run`).
    Each stored event is queued for the `destinations` its `integrations` selects, and the
    app runs their routers while it serves.
    """
    settings = settings_of(database, options)
    collector = _Collector(settings)
    routes = [
        Route(
            path,
            functools.partial(collector.ingest, route_type=kind, browser=short),
            methods=["POST"],
        )
        for path, (kind, short) in INGEST_ROUTES.items()
    ]
    routes += browser.routes(collector.keys, settings.analytics_js)
    routes += [
        Route("/api/events", collector.read_api.list_events, methods=["GET"]),
        Route("/api/events", collector.read_api.clear_events, methods=["DELETE"]),
        *routes_destinations.routes(collector),
        Route("/api/events/{message_id:path}", collector.read_api.get_event, methods=["GET"]),
        Route("/api/stats", collector.read_api.stats, methods=["GET"]),
        Route("/api/stream", collector.read_api.stream, methods=["GET"]),
        Route("/healthz", collector.health, methods=["GET"]),
        *debugger.routes(collector.page_refusal, collector.login),
    ]
    handlers: dict[Any, Any] = {
        HTTPException: _http_error,
        StorageError: _storage_unavailable,
        Exception: _internal_error,
    }
    policies = collector.policies
    # The guard first: no answer at all (not even to a preflight) for a host it refuses.
    middleware = [
        Middleware(Guard, hosts=policies.hosts, clients=policies.clients),
        Middleware(CorsMiddleware, origins=policies.origins, method_of=cross_origin_method),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=handlers,
        lifespan=collector.lifespan,
    )
    app.state.collector = collector
    return app
