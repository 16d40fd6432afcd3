"""The `Client` facade: six calls become encoded messages in the buffer; flush, shutdown, stats.

A call validates and encodes on the caller's thread, then appends bytes to the buffer under a
lock: no network, no disk, no waking the worker unless a batch is full. What happens next is the
workers' business (`worker.py`, `delivery.py`). Every live client is flushed at interpreter
exit within its `shutdown_timeout`, and rebuilt empty in the child after `fork()`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal

from trackline import messages
from trackline.buffer import Buffer, MemoryBuffer, closed
from trackline.config import (
    Config,
    ErrorCallback,
    SuccessCallback,
    default,
    resolve_host,
    resolve_spool,
    resolve_write_key,
)
from trackline.context import current as current_context
from trackline.delivery import Delivery
from trackline.errors import DeliveryError, InvalidMessage
from trackline.messages import Timestamp
from trackline.report import Reporter
from trackline.spool import Spool
from trackline.stats import DropReason, Stats
from trackline.tracing import Scope, scope_with_trace_ids
from trackline.transport import HttpTransport, Transport
from trackline.worker import Workers

logger = logging.getLogger(__name__)

_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()
#: Clients whose workers have started and that are not shut down, held strongly: a client the
#: app no longer references keeps its worker running, and must still be flushed at exit with
#: what it has queued. A client that never sent anything stays free to be collected.
_working_clients: set[Client] = set()

#: Seconds an async flush waits on a thread at a time: a cancelled await leaves no thread
#: waiting for longer.
_ASYNC_SLICE: Final = 0.25

#: The transport new clients use instead of HTTP, inside `new_clients_send_to`.
_routed_to: Transport | None = None


@contextlib.contextmanager
def new_clients_send_to(transport: Transport) -> Iterator[None]:
    """Every `Client` made in the block sends through `transport`, unless given its own: how
    `trackline.testing.Capture.installed()` captures the clients an application makes."""
    global _routed_to
    saved, _routed_to = _routed_to, transport
    try:
        yield
    finally:
        _routed_to = saved


class Client:
    """Records analytics events and delivers them in batches from background threads.

    Options are documented in docs/reference/client-options.md (the documentation's Client
    options page); every one is validated here, and a wrong one raises `ConfigError` naming
    it. `write_key` and `host` default to the `TRACKLINE_WRITE_KEY` and `TRACKLINE_HOST`
    environment variables.
    """

    def __init__(
        self,
        write_key: str | None = None,
        *,
        host: str | None = None,
        timeout: float = default("timeout"),
        max_queue_size: int = default("max_queue_size"),
        max_queue_bytes: int = default("max_queue_bytes"),
        flush_at: int = default("flush_at"),
        flush_interval: float = default("flush_interval"),
        gzip: bool = default("gzip"),
        sync: bool = default("sync"),
        send: bool = default("send"),
        workers: int = default("workers"),
        max_retries: int = default("max_retries"),
        delivery_timeout: float = default("delivery_timeout"),
        backoff_base: float = default("backoff_base"),
        backoff_cap: float = default("backoff_cap"),
        queue_full: Literal["drop", "block"] = default("queue_full"),
        block_timeout: float = default("block_timeout"),
        on_error: ErrorCallback | None = None,
        on_success: SuccessCallback | None = None,
        proxy: str | None = None,
        shutdown_timeout: float = default("shutdown_timeout"),
        spool: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = default("max_spool_bytes"),
        max_age: float = default("max_age"),
        spool_synchronous: Literal["normal", "full"] = default("spool_synchronous"),
        trace_ids: bool = default("trace_ids"),
        transport: Transport | None = None,
    ) -> None:
        self.config = Config(
            write_key=resolve_write_key(write_key),
            host=resolve_host(host),
            timeout=timeout,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            flush_at=flush_at,
            flush_interval=flush_interval,
            gzip=gzip,
            sync=sync,
            send=send,
            workers=workers,
            max_retries=max_retries,
            delivery_timeout=delivery_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            queue_full=queue_full,
            block_timeout=block_timeout,
            on_error=on_error,
            on_success=on_success,
            proxy=proxy,
            shutdown_timeout=shutdown_timeout,
            spool=resolve_spool(spool),
            max_spool_bytes=max_spool_bytes,
            max_age=max_age,
            spool_synchronous=spool_synchronous,
            trace_ids=trace_ids,
        )
        config = self.config
        # The context every call starts from: the scope's (a web request's), and with
        # `trace_ids` the active OpenTelemetry span's ids under it.
        self._scope: Scope = scope_with_trace_ids() if config.trace_ids else current_context
        self._block_timeout = config.block_timeout if config.queue_full == "block" else None
        self._transport: Transport = (
            transport
            or _routed_to
            or HttpTransport(
                config.host,
                config.write_key,
                timeout=config.timeout,
                gzip=config.gzip,
                proxy=config.proxy,
                connections=config.workers,
            )
        )
        self._reporter = Reporter(config.on_error, config.on_success)
        # Durable mode (`spool`) keeps messages on disk instead; see trackline/spool/.
        self._buffer: Buffer = (
            MemoryBuffer(config.max_queue_size, config.max_queue_bytes, config.flush_at)
            if config.spool is None
            else Spool(config, self._reporter)
        )
        self._lifecycle = threading.Lock()
        self._closed = False
        self._setup_runtime()
        _live_clients.add(self)

    def _setup_runtime(self) -> None:
        """Create the stop event, the delivery loop and the (not yet started) workers."""
        config = self.config
        self._stop = threading.Event()
        self._delivery = Delivery(
            config, self._transport, self._buffer, self._reporter, self._stop, rng=random.Random()
        )
        self._workers = Workers(
            self._buffer,
            self._delivery,
            self._stop,
            count=config.workers,
            interval=config.flush_interval,
            flush_at=config.flush_at,
            name=f"trackline-{id(self):x}",
        )
        if len(self._buffer):
            self._start_workers()  # messages left in the spool by earlier processes go first
        self._update_accepting()

    def _start_workers(self) -> None:
        self._workers.start()
        _working_clients.add(self)

    # -- the six calls -----------------------------------------------------------------------

    def identify(
        self,
        user_id: str | int | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Tie a user to their traits. Returns the message id, or None if it was dropped."""
        mid, data = messages.build(
            "identify",
            messages.identify_fields(traits),
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    def track(
        self,
        user_id: str | int | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Record an action the user performed. Returns the message id, or None if dropped."""
        mid, data = messages.build_track(
            user_id,
            event,
            properties,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    def page(
        self,
        user_id: str | int | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        category: str | None = None,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Record a web page view. Returns the message id, or None if it was dropped."""
        mid, data = messages.build(
            "page",
            messages.page_fields(name, category, properties),
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    def screen(
        self,
        user_id: str | int | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        category: str | None = None,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Record a mobile screen view. Returns the message id, or None if it was dropped."""
        mid, data = messages.build(
            "screen",
            messages.page_fields(name, category, properties),
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    def group(
        self,
        user_id: str | int | None = None,
        group_id: str | int | None = None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Associate a user with a group. Returns the message id, or None if it was dropped."""
        mid, data = messages.build(
            "group",
            messages.group_fields(group_id, traits),
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    def alias(
        self,
        previous_id: str | int | None,
        user_id: str | int | None,
        *,
        anonymous_id: str | int | None = None,
        context: Mapping[str, Any] | None = None,
        integrations: Mapping[str, Any] | None = None,
        timestamp: Timestamp | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Tie a previous identity to a user id. Returns the message id, or None if dropped."""
        fields = messages.alias_fields(previous_id)
        if user_id is None or user_id == "":
            raise InvalidMessage("user_id", "alias requires a user_id")
        mid, data = messages.build(
            "alias",
            fields,
            user_id,
            anonymous_id,
            context,
            integrations,
            timestamp,
            message_id,
            self._scope(),
        )
        return self._enqueue(mid, data)

    # -- relays ------------------------------------------------------------------------------

    def forward(self, data: bytes) -> bool:
        """Queue one message that is already encoded, exactly as given.

        For relays (the collector's `tracking-api` destination): `data` is the JSON of a
        complete Spec message, `messageId`, timestamps and `context` included; nothing is
        validated, added or re-encoded. It then goes the way the six calls' messages go:
        batched, sent, retried, counted in `stats` and reported to `on_success`/`on_error`.
        Returns False when it was dropped at once (buffer full, client shut down), which is
        also reported. Internal: kept for the collector, not part of the public API.
        """
        return self._enqueue("", data) is not None

    # -- the path of an accepted message -----------------------------------------------------

    def _enqueue(self, message_id: str, data: bytes) -> str | None:
        if self._accepting:
            error = self._buffer.put(data, self._block_timeout)
            if error is None:
                return message_id
            self._reporter.dropped(error, [data], 1)
            return None
        if self._closed:
            self._buffer.counters.count_refused(DropReason.CLOSED)
            self._reporter.dropped(closed(), [data], 1)
            return None
        config = self.config
        if not config.send:
            self._buffer.counters.count_refused(DropReason.SEND_DISABLED)
            return message_id
        if config.sync and not _in_event_loop():
            batch = self._buffer.admit(data)
            if batch is None:
                self._reporter.dropped(closed(), [data], 1)
                return None
            return message_id if self._delivery.deliver(batch) else None
        if not self._workers.started:
            self._start_workers()
            self._update_accepting()
        error = self._buffer.put(data, self._block_timeout)
        if error is None:
            if config.sync:
                # On an event loop's thread a send would block the loop: a worker sends it
                # now instead, and `await flush_async()` waits for the answer.
                self._buffer.request_flush()
            return message_id
        self._reporter.dropped(error, [data], 1)
        return None

    def _update_accepting(self) -> None:
        """Whether a call may go straight to the buffer: open, sending in the background, and
        the workers running. One flag read instead of four checks on every call; the buffer
        decides under its lock whether the message is still taken (`seal`)."""
        config = self.config
        self._accepting = (
            self._workers.started and not self._closed and config.send and not config.sync
        )

    # -- flush, shutdown, stats --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now and wait until it is delivered or dropped.

        Returns True when every message queued before the call has been delivered or dropped
        with a reason, False if `timeout` seconds passed first. With no timeout the wait is
        bounded by `delivery_timeout`, which every batch is settled within; in durable mode
        an outage holds batches on disk until `max_age`, so give such a flush a timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._buffer.request_flush()
        return self._buffer.wait_flushed(target, deadline)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, stop the workers, and drop what is left when `timeout` runs out.

        `timeout` defaults to `shutdown_timeout`. Later calls to the six methods are dropped
        (reason `closed`). Calling it again does nothing. Returns True when nothing was left.
        In durable mode nothing is dropped: what is left stays in the spool for the next start.
        """
        with self._lifecycle:
            if self._closed:
                return True
            self._closed = True
            self._accepting = False
        # From here a call racing this one is dropped as `closed` by the buffer itself.
        self._buffer.seal()
        wait = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        flushed = self.flush(wait)
        self._stop.set()
        self._buffer.close()
        self._workers.join(deadline)
        leftovers = self._buffer.abandon(DropReason.SHUTDOWN_TIMEOUT)
        if leftovers:
            self._reporter.dropped(
                DeliveryError(
                    DropReason.SHUTDOWN_TIMEOUT,
                    f"still queued or in flight when shutdown's {wait:g}s ran out",
                ),
                leftovers,
                len(leftovers),
            )
        self._transport.close()
        _live_clients.discard(self)
        _working_clients.discard(self)
        return flushed and not leftovers

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of this client's accounting.

        In durable mode `enqueued` and `queued` also count the messages found in the spool at
        start, and after `shutdown()` `queued` counts those left on disk for the next start.
        """
        return self._buffer.counters.snapshot()

    async def flush_async(self, timeout: float | None = None) -> bool:
        """`flush()` for coroutines: the same promise, awaited without blocking the event loop
        (the wait happens on a thread of the loop's executor, a slice at a time)."""
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._buffer.request_flush()
        while True:
            now = time.monotonic()
            until = now + _ASYNC_SLICE if deadline is None else min(deadline, now + _ASYNC_SLICE)
            if await asyncio.to_thread(self._buffer.wait_flushed, target, until):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    async def shutdown_async(self, timeout: float | None = None) -> bool:
        """`shutdown()` for coroutines, awaited without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.shutdown, timeout)

    def __enter__(self) -> Client:
        return self

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.shutdown_async()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<trackline.Client host={self.config.host!r} {state}>"

    def _after_fork_in_child(self) -> None:
        """The child keeps the configuration, with an empty buffer and fresh threads."""
        self._buffer.reset_after_fork()
        self._transport.reset_after_fork()
        self._lifecycle = threading.Lock()
        self._setup_runtime()


def live_clients() -> list[Client]:
    """Every client not yet shut down, in this process."""
    return list(_live_clients)


def flush_clients(clients: Iterable[Client], timeout: float | None) -> bool:
    """Flush several clients within one deadline: each is asked first, so that they all send
    at once, then each is waited for with what is left of `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    targets = [(client, client._buffer.request_flush()) for client in clients]
    return all(client._buffer.wait_flushed(target, deadline) for client, target in targets)


def _in_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (without importing asyncio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


def _shutdown_all_at_exit() -> None:
    """At interpreter exit, flush every live client within its own `shutdown_timeout`."""
    clients = live_clients()
    for client in clients:
        client._buffer.request_flush()
    for client in clients:
        try:
            client.shutdown()
        except Exception:  # pragma: no cover - exit must go on whatever happens
            logger.exception("shutting down %r at exit failed", client)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_all_at_exit)
