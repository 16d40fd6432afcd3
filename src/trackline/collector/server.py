"""Run the collector with uvicorn: in the foreground (`run`, for the CLI) or in a background
thread (`start`/`serve`, for tests, the demo and users' own code).

uvicorn gives no deadline for a request to arrive: its keep-alive timer restarts on every
byte, so a client trickling header bytes holds a connection forever. The protocol below adds
one: the request line and headers must be complete within `header_timeout` of the connection
opening (or of the previous response), or the connection is closed, with a 408 when part of a
request had arrived. The body deadline lives in the app, around reading the body; the same
`header_timeout` bounds the discarding of a body the app refused without reading it all.

Nor does uvicorn bound how long a client may leave an answer unread: a listing or a live
stream would wait on it forever, holding its place. The protocol closes a connection whose
writes stay paused (the socket's buffers full) for `send_timeout`.

The protocol subclasses uvicorn's `H11Protocol` and uses some of its internals (`conn`,
`cycle`, `transport`, `loop`, `on_response_complete`, `send_400_response`): `pyproject.toml`
admits only the uvicorn releases it was tested with (0.32.1 to 0.54), and
`tests/collector/test_server.py` fails on one that changed them. uvicorn's own proxy header
handling is off: the app believes `X-Forwarded-*` from `trusted_proxies` only, whatever
`FORWARDED_ALLOW_IPS` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, Unpack

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from trackline.collector.access import check_bind, is_loopback_bind
from trackline.collector.app import create_app
from trackline.collector.handoff import Receiver
from trackline.collector.live import EventHub
from trackline.collector.processes import Supervisor
from trackline.collector.settings import (
    DEFAULT_PORT,
    CollectorSettings,
    SettingsOptions,
    settings_of,
)
from trackline.collector.store import Store, open_store

logger = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish once shutdown starts.
GRACEFUL_SHUTDOWN_SECONDS: Final = 30
_STARTUP_SECONDS: Final = 10.0
#: How long a thread keeps the GIL once another asks for it, in a process `run` serves
#: (Python's default is 5 ms). The store's writer thread gives the GIL up inside every
#: SQLite or PostgreSQL call and needs it back after each one, while the event loop spends
#: milliseconds at a time in Python on a batch of 100 messages. With the default, the writer
#: spent about half its time waiting to continue (20 ms a group commit of 400 events, 10 of
#: them on the CPU), and it is the thread that bounds the rate. Measured against the default
#: (`bench.curve`, variants alternating in one run): 0.2 ms stored 12% more events/s on an
#: empty store and 9% more at a million events (0.5 ms: 7% and 6%); in a second run, four
#: paired runs, +7%, -1%, +3% and +9%; on PostgreSQL +13% and +21%. It costs CPU (more
#: switches), which a small machine feels: measure again before changing it.
GIL_SWITCH_SECONDS: Final = 0.0002
#: Bytes of an unread request body discarded after the answer, before closing instead.
MAX_DRAIN_BYTES: Final = 16 * 1024 * 1024

_TIMEOUT_BODY: Final = b'{"code":"request_timeout","message":"the request headers came too slowly"}'
_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)
_BAD_REQUEST_BODY: Final = b'{"code":"bad_request","message":"the request is not valid HTTP/1.1"}'
_BAD_REQUEST_RESPONSE: Final = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BAD_REQUEST_BODY), _BAD_REQUEST_BODY)
)


def _protocol_class(header_timeout: float, send_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with deadlines for what uvicorn leaves unbounded: the request
    line and headers, the rest of a body the app answered without reading (after a 413,
    say), and an answer the client does not read. uvicorn discards such a rest so the client
    can read the answer, instead of getting a reset for closing on unread data; this bounds
    how long and how much it discards."""

    class DeadlineProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _send_timer: asyncio.TimerHandle | None = None
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
            self._send_unpaused()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(send_timeout, self._send_late)

        def resume_writing(self) -> None:
            self._send_unpaused()
            super().resume_writing()

        def _send_unpaused(self) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _send_late(self) -> None:
            # The client took nothing for send_timeout: what is buffered would never drain,
            # so the connection is dropped rather than closed after a flush.
            self._send_timer = None
            self.transport.abort()

        def send_400_response(self, msg: str) -> None:
            # uvicorn's own answer to bytes that are not HTTP: the same, as JSON with nosniff.
            self.transport.write(_BAD_REQUEST_RESPONSE)
            self.transport.close()

    return DeadlineProtocol


class _Server(uvicorn.Server):
    """uvicorn's server, ending live streams at shutdown and leaving signals to its caller;
    with an `inbox`, it serves the connections the parent process hands it (`handoff.py`)
    rather than a listening socket of its own."""

    def __init__(
        self,
        config: uvicorn.Config,
        hub: EventHub,
        signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
        inbox: socket.socket | None = None,
    ) -> None:
        super().__init__(config)
        self._hub = hub
        self._signals = signals
        self._inbox = inbox
        self._receiver: Receiver | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._inbox is None:
            return
        config, state = self.config, self.server_state

        def create_protocol() -> asyncio.Protocol:
            # As uvicorn makes the protocol of a connection it accepted itself.
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=self.lifespan.state
            )

        self._receiver = Receiver(self._inbox, create_protocol, self._parent_gone)
        self._receiver.start(asyncio.get_running_loop())

    def _parent_gone(self) -> None:
        # No connection will come any more: finish those held and leave, as on SIGTERM.
        if not self.should_exit:
            logger.warning("the collector's parent process has gone; stopping")
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._receiver is not None:
            self._receiver.close()
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
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in self._signals}
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
    settings: CollectorSettings,
    storage: Store,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    inbox: socket.socket | None = None,
) -> _Server:
    app = create_app(dataclasses.replace(settings, database=storage))
    config = uvicorn.Config(
        app,
        http=_protocol_class(settings.header_timeout, settings.send_timeout),
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_config=None,  # a library never configures logging
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the app believes trusted_proxies only
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return _Server(config, storage.hub, signals, inbox)


def _open(settings: CollectorSettings) -> tuple[Store, bool]:
    """The store `settings` name and whether this server owns it (opened it from a path)."""
    policies = settings.policies()
    check_bind(settings.host, policies.write_keys)
    if not is_loopback_bind(settings.host) and not policies.read_access.token_required:
        logger.info(
            "listening on %s without a read token: only clients on this machine may read "
            "(the API, the live stream, the debugger); --read-token lets others in",
            settings.host,
        )
    database = settings.database
    if isinstance(database, str | os.PathLike):
        store = open_store(
            database,
            lock_timeout=settings.lock_timeout,
            fsync=settings.fsync,
            retention=settings.retention,
        )
        return store, True
    return database, False


@dataclasses.dataclass(eq=False)
class RunningCollector:
    """A collector serving from a background thread; `stop()` it (or leave `serve`)."""

    url: str
    storage: Store
    _server: _Server = dataclasses.field(repr=False)
    _thread: threading.Thread = dataclasses.field(repr=False)
    _owns_storage: bool = dataclasses.field(default=True, repr=False)

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
        if self._owns_storage:
            self.storage.close()


def start(
    database: str | os.PathLike[str] | Store | CollectorSettings,
    /,
    **options: Unpack[SettingsOptions],
) -> RunningCollector:
    """Serve a collector from a background thread, ready when this returns.

    `database` is a SQLite file path, an open `Store` (the caller closes it) or
    `CollectorSettings`; keyword `options` set (or override) the settings' fields. Without a
    `port`, a free one is taken. Raises `OpenBindError` for a non-loopback `host` without
    `write_keys`, `ConfigError` for a bad option, `StorageError` when the database cannot be
    used, and `OSError` when the address is taken or `analytics_js` cannot be read.
    """
    settings = settings_of(database, options)
    storage, owned = _open(settings)
    try:
        # The app first: an option it refuses must not leave a socket listening.
        server = _server(settings, storage)
        sock = _listen(settings.host, settings.listening_port(0))
        url = _url(sock)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="trackline-collector", daemon=True
        )
        thread.start()
    except BaseException:
        if owned:
            storage.close()
        raise
    running = RunningCollector(url, storage, server, thread, owned)
    deadline = time.monotonic() + _STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            running.stop(timeout=1.0)
            raise RuntimeError("the collector did not start; see the trackline.collector log")
        time.sleep(0.005)
    return running


@contextlib.contextmanager
def serve(
    database: str | os.PathLike[str] | Store | CollectorSettings,
    /,
    **options: Unpack[SettingsOptions],
) -> Iterator[RunningCollector]:
    """`start` a collector for the duration of a `with` block, then stop it gracefully."""
    running = start(database, **options)
    try:
        yield running
    finally:
        running.stop()


def run(
    database: str | os.PathLike[str] | Store | CollectorSettings,
    /,
    *,
    on_ready: Callable[[str], None] | None = None,
    **options: Unpack[SettingsOptions],
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM, then shut down gracefully: stop
    accepting, finish in-flight requests (each answered only after its commit), close the
    store. Takes what `start` takes; without a `port`, 8765. `on_ready(url)` is called once
    the socket listens. With `processes` above 1, that many processes serve the socket.

    The process is the collector's: its threads switch the GIL every 0.2 ms
    (`GIL_SWITCH_SECONDS`), not every 5 ms. `start` and `serve`, which run in a process of
    the caller's, leave Python's setting alone."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    settings = settings_of(database, options)
    storage, owned = _open(settings)
    if settings.processes > 1:
        _run_processes(settings, storage, on_ready)
        return
    try:
        server = _server(settings, storage)
        sock = _listen(settings.host, settings.listening_port(DEFAULT_PORT))
        if on_ready is not None:
            on_ready(_url(sock))  # connections wait in the listen backlog until served
        server.run(sockets=[sock])
    finally:
        if owned:
            storage.close()


def _run_processes(
    settings: CollectorSettings, storage: Store, on_ready: Callable[[str], None] | None
) -> None:
    """`run` with `settings.processes` processes sharing the socket, each with its own
    connections to the database (`trackline.collector.processes`; PostgreSQL only, which
    the settings check)."""
    # The store was opened to migrate it and to fail here, once, if it cannot be used; each
    # process opens its own after the fork. So is the app, for the options it checks.
    try:
        _server(settings, storage)
    finally:
        storage.close()
    sock = _listen(settings.host, settings.listening_port(DEFAULT_PORT))
    if on_ready is not None:
        on_ready(_url(sock))

    def serve_one(inbox: socket.socket) -> None:
        own, _ = _open(settings)
        try:
            _server(settings, own, (signal.SIGTERM,), inbox).run(sockets=[])
        finally:
            own.close()

    Supervisor(settings.processes, serve_one, GRACEFUL_SHUTDOWN_SECONDS + 5.0, sock).run()
