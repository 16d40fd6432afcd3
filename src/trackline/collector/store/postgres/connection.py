"""Connections to PostgreSQL with every wait bounded: opening, locks, statements, and a
server that stops answering altogether.

PostgreSQL bounds what it sees itself (`lock_timeout`, `statement_timeout`), but not a network
that swallows packets: a query sent into a black hole waits forever on the socket, and neither
the server nor TCP (the far end of the TCP connection may be a healthy proxy) ever says so. The
`Watchdog` covers that: work is done under `guard(conn, seconds)`, and a guard that outlives its
deadline has its socket shut down, which wakes the blocked call with an error. Shutting the
socket down, rather than closing it, leaves the file descriptor to its owner, so no other thread
can find it reused.

`Pool` is the readers' few connections: taken and given back by threads, a broken one dropped,
a new one opened on demand; no background threads, so a database that is gone costs nothing
until someone reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Final, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from trackline.collector.store.base import StorageError
from trackline.collector.store.url import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: How often the watchdog looks for guards past their deadline.
WATCHDOG_TICK_SECONDS: Final = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """The bounds every connection of a store gets, in seconds.

    `lock` is how long a statement waits for a lock (PostgreSQL's `lock_timeout`);
    `statement` how long one statement may run; `connect` how long opening may take.
    """

    lock: float
    statement: float
    connect: float

    @classmethod
    def from_lock_timeout(cls, lock_timeout: float) -> Timeouts:
        """The store's bounds from the collector's `lock_timeout` (the commit's lock wait)."""
        if not lock_timeout > 0:
            raise ValueError(f"lock_timeout must be greater than zero, not {lock_timeout}")
        # A statement may wait for a lock and then still have work to do.
        statement = lock_timeout + max(1.0, lock_timeout)
        return cls(lock=lock_timeout, statement=statement, connect=max(2.0, lock_timeout))


def conninfo(url: str, timeouts: Timeouts, role: str) -> str:
    """`url` plus the store's session settings: timeouts, keepalives, an application name."""
    options = (
        f"-c lock_timeout={math.ceil(timeouts.lock * 1000)} "
        f"-c statement_timeout={math.ceil(timeouts.statement * 1000)} "
        # A process stopped in the middle of a transaction must not hold locks for long.
        f"-c idle_in_transaction_session_timeout={math.ceil((timeouts.statement + 30) * 1000)}"
    )
    try:
        return make_conninfo(
            url,
            application_name=f"trackline-collector {role}",
            connect_timeout=max(2, math.ceil(timeouts.connect)),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=math.ceil((timeouts.statement + 5) * 1000),
            options=options,
        )
    except psycopg.ProgrammingError as exc:
        raise StorageError(f"the database URL is not valid: {exc}") from None


def storage_error(exc: BaseException, url: str) -> StorageError:
    """`exc` as the store's error, with the database named without its password."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"PostgreSQL at {redact(url)}: {message}")


def shut_down(conn: psycopg.Connection[Any]) -> None:
    """Wake whoever waits on `conn`'s socket with an error; the descriptor stays open."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = conn.pgconn.socket
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


class Watchdog:
    """One thread that shuts down the sockets of connections whose work outlived its deadline."""

    def __init__(self, name: str) -> None:
        self._guards: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self.fired = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        """Work on `conn` inside the block must end within `seconds`, or its socket is shut."""
        with self._lock:
            self._next += 1
            key = self._next
            self._guards[key] = (time.monotonic() + seconds, conn)
        try:
            yield
        finally:
            with self._lock:
                self._guards.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(WATCHDOG_TICK_SECONDS):
            now = time.monotonic()
            with self._lock:
                late = [key for key, (deadline, _) in self._guards.items() if deadline < now]
                expired = [self._guards.pop(key)[1] for key in late]
            for conn in expired:
                self.fired += 1
                logger.warning("PostgreSQL did not answer in time; dropping the connection")
                shut_down(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


class Pool:
    """At most `size` connections for short reads, opened on demand, broken ones dropped;
    a thread waits `wait` seconds at most for one."""

    def __init__(
        self, info: str, url: str, size: int, *, wait: float, watchdog: Watchdog, deadline: float
    ) -> None:
        self._info = info
        self._url = url
        self._size = size
        self._wait = wait
        self._watchdog = watchdog
        self._deadline = deadline
        self._idle: list[psycopg.Connection[Any]] = []
        self._open = 0
        self._closed = False
        self._changed = threading.Condition()

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work(conn)` on a connection in autocommit mode, within the pool's deadline;
        raises `StorageError`. A connection that had been waiting idle and turns out to be
        dead (the server restarted, or killed it) is replaced and `work` tried once more."""
        for attempt in (1, 2):
            conn, reused = self._take()
            try:
                with self._watchdog.guard(conn, self._deadline):
                    return work(conn)
            except psycopg.Error as exc:
                if reused and conn.broken and attempt == 1:
                    continue
                raise storage_error(exc, self._url) from exc
            finally:
                self._give(conn)
        raise AssertionError("unreachable")

    def stream(
        self, work: Callable[[psycopg.Connection[Any]], Generator[T, None, R]]
    ) -> Generator[T, None, R]:
        """The items of `work(conn)`, each made within the pool's deadline (the time between
        items, when the caller hands them on, is not counted), then what it returns; the
        connection is held until the generator ends or is closed. Raises `StorageError`."""
        conn, _ = self._take()
        try:
            items = work(conn)
            while True:
                try:
                    with self._watchdog.guard(conn, self._deadline):
                        item = next(items)
                except StopIteration as end:
                    result: R = end.value
                    return result
                except psycopg.Error as exc:
                    raise storage_error(exc, self._url) from exc
                yield item
        finally:
            self._give(conn)

    def _take(self) -> tuple[psycopg.Connection[Any], bool]:
        deadline = time.monotonic() + self._wait
        with self._changed:
            while True:
                if self._closed:
                    raise StorageError("the store is closed")
                if self._idle:
                    return self._idle.pop(), True
                if self._open < self._size:
                    self._open += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StorageError("every PostgreSQL connection for reading is busy")
                self._changed.wait(remaining)
        try:
            return psycopg.connect(self._info, autocommit=True), False
        except BaseException as exc:
            with self._changed:
                self._open -= 1
                self._changed.notify()
            if isinstance(exc, psycopg.Error):
                raise storage_error(exc, self._url) from exc
            raise

    def _give(self, conn: psycopg.Connection[Any]) -> None:
        keep = not conn.closed and not conn.broken
        with self._changed:
            if keep and not self._closed:
                self._idle.append(conn)
            else:
                self._open -= 1
                conn.close()
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._changed.notify_all()
        for conn in idle:
            conn.close()
