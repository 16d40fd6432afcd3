"""Run the collector with uvicorn: in the foreground (`run`, for the CLI) or in a background
thread (`start`/`serve`, for tests, the demo and users' own code).

uvicorn gives no deadline for a request to arrive: its keep-alive timer restarts on every
byte, so a client trickling header bytes holds a connection forever. The protocol below adds
one: the request line and headers must be complete within `header_timeout` of the connection
opening (or of the previous response), or the connection is closed, with a 408 when part of a
request had arrived. The body deadline lives in the app, around reading the body; the same
`header_timeout` bounds the discarding of a body the app refused without reading it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from trackline.collector.access import WriteKeys, check_bind
from trackline.collector.app import create_app
from trackline.collector.live import EventHub
from trackline.collector.store import Store, open_store

logger = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish once shutdown starts.
GRACEFUL_SHUTDOWN_SECONDS: Final = 30
_STARTUP_SECONDS: Final = 10.0
#: Bytes of an unread request body discarded after the answer, before closing instead.
MAX_DRAIN_BYTES: Final = 16 * 1024 * 1024

_TIMEOUT_BODY: Final = b'{"code":"request_timeout","message":"the request headers came too slowly"}'
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def _protocol_class(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with deadlines for what uvicorn leaves unbounded: the request
    line and headers, and the rest of a body the app answered without reading (after a 413,
    say). uvicorn discards such a rest so the client can read the answer, instead of getting a
    reset for closing on unread data; this bounds how long and how much it discards."""

    class DeadlineProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _draining: int | None = None
        _drain_cycle: object = None

        def _arm(self, callback: Callable[[], None]) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _headers_late(self) -> None:
            self._timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            partial, _ = self.conn.trailing_data
            if partial:
                # An idle keep-alive connection is closed silently: a 408 there could be read
                # as the answer to a request the client is sending at this very moment.
                self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

        def _drain_late(self) -> None:
            self._timer = None
            if self._draining is not None:
                self.transport.close()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm(self._headers_late)

        def data_received(self, data: bytes) -> None:
            if self._draining is not None:
                self._draining += len(data)
                if self._draining > MAX_DRAIN_BYTES:
                    self.transport.close()
                    return
            super().data_received(data)
            if self._draining is not None:
                if self.cycle is self._drain_cycle and self.conn.their_state is h11.SEND_BODY:
                    return
                self._draining = None
                self._disarm()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()
            elif self._timer is None:
                self._arm(self._headers_late)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                self._arm(self._headers_late)
            elif self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE:
                self._draining, self._drain_cycle = 0, self.cycle
                self._arm(self._drain_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


class _Server(uvicorn.Server):
    """uvicorn's server, ending live streams at shutdown and leaving signals to its caller."""

    def __init__(self, config: uvicorn.Config, hub: EventHub) -> None:
        super().__init__(config)
        self._hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Open streams never end by themselves; uvicorn would wait for them until its timeout.
        self._hub.close()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after its shutdown, which would kill the process before
        # the store is closed; here SIGINT/SIGTERM only start a graceful shutdown.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (0 picks a free port); IPv4 first for names."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, address = infos[0]
    sock = socket.create_server(address[:2], family=family, backlog=2048)
    # asyncio turns Nagle off only on sockets made with proto=IPPROTO_TCP, and create_server
    # makes proto 0: without this, an answer's body waits ~40 ms for the client's delayed ACK
    # on every keep-alive request. Accepted connections inherit the option.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(
    storage: Store,
    write_keys: Iterable[str],
    header_timeout: float,
    body_timeout: float,
    lock_timeout: float,
    allow_origins: Iterable[str],
    analytics_js: str | os.PathLike[str] | None,
) -> _Server:
    app = create_app(
        storage,
        write_keys=write_keys,
        body_timeout=body_timeout,
        lock_timeout=lock_timeout,
        allow_origins=allow_origins,
        analytics_js=analytics_js,
    )
    config = uvicorn.Config(
        app,
        http=_protocol_class(header_timeout),
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_config=None,  # a library never configures logging
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return _Server(config, storage.hub)


@dataclasses.dataclass(eq=False)
class RunningCollector:
    """A collector serving from a background thread; `stop()` it (or leave `serve`)."""

    url: str
    storage: Store
    _server: _Server = dataclasses.field(repr=False)
    _thread: threading.Thread = dataclasses.field(repr=False)

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = GRACEFUL_SHUTDOWN_SECONDS + 5.0) -> None:
        """Stop accepting, let in-flight requests finish, close the store; idempotent."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5.0)
        self.storage.close()


def start(
    database: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    write_keys: Iterable[str] = (),
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    lock_timeout: float = 5.0,
    fsync: bool = False,
    allow_origins: Iterable[str] = (),
    analytics_js: str | os.PathLike[str] | None = None,
) -> RunningCollector:
    """Serve a collector on `host`:`port` from a background thread, ready when this returns.

    Raises `OpenBindError` for a non-loopback `host` without `write_keys`, `StorageError` when
    the database cannot be used, `OSError` when the address is taken or `analytics_js` cannot
    be read, and `ValueError` for an `allow_origins` entry that is not an origin. See
    `create_app` for `allow_origins` and `analytics_js`.
    """
    keys = tuple(write_keys)
    check_bind(host, WriteKeys(keys))
    storage = open_store(database, lock_timeout=lock_timeout, fsync=fsync)
    try:
        # The app first: an option it refuses must not leave a socket listening.
        server = _server(
            storage, keys, header_timeout, body_timeout, lock_timeout, allow_origins, analytics_js
        )
        sock = _listen(host, port)
        url = _url(sock)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="trackline-collector", daemon=True
        )
        thread.start()
    except BaseException:
        storage.close()
        raise
    running = RunningCollector(url, storage, server, thread)
    deadline = time.monotonic() + _STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            running.stop(timeout=1.0)
            raise RuntimeError("the collector did not start; see the trackline.collector log")
        time.sleep(0.005)
    return running


@contextlib.contextmanager
def serve(
    database: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    write_keys: Iterable[str] = (),
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    lock_timeout: float = 5.0,
    fsync: bool = False,
    allow_origins: Iterable[str] = (),
    analytics_js: str | os.PathLike[str] | None = None,
) -> Iterator[RunningCollector]:
    """`start` a collector for the duration of a `with` block, then stop it gracefully."""
    running = start(
        database,
        host=host,
        port=port,
        write_keys=write_keys,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        lock_timeout=lock_timeout,
        fsync=fsync,
        allow_origins=allow_origins,
        analytics_js=analytics_js,
    )
    try:
        yield running
    finally:
        running.stop()


def run(
    database: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    write_keys: Iterable[str] = (),
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    lock_timeout: float = 5.0,
    fsync: bool = False,
    allow_origins: Iterable[str] = (),
    analytics_js: str | os.PathLike[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then shut down gracefully: stop
    accepting, finish in-flight requests (each answered only after its commit), close the
    store. `on_ready(url)` is called once the socket listens."""
    keys = tuple(write_keys)
    check_bind(host, WriteKeys(keys))
    storage = open_store(database, lock_timeout=lock_timeout, fsync=fsync)
    try:
        server = _server(
            storage, keys, header_timeout, body_timeout, lock_timeout, allow_origins, analytics_js
        )
        sock = _listen(host, port)
        if on_ready is not None:
            on_ready(_url(sock))  # connections wait in the listen backlog until served
        server.run(sockets=[sock])
    finally:
        storage.close()
