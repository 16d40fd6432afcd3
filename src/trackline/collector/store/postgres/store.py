"""`PostgresStore`: the collector's store on PostgreSQL, shared by any number of collector
processes on any number of machines.

Per process: one writer thread and connection (group commit, `writer.py`), one listening
connection for other processes' live events (`listener.py`), up to `read_connections`
connections for reads, and a maintenance thread (`partitions.py`) of which one process at a
time does the work. Every wait is bounded (`connection.py`): while PostgreSQL is gone, locked
or silent, writes fail within the request deadline (503) and the store reconnects by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final

import psycopg

from trackline.collector.ingest import Row
from trackline.collector.live import EventHub
from trackline.collector.store.base import EventQuery, Stats, StorageError, WriteResult
from trackline.collector.store.group import PendingWrite
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    Routes,
    Settlement,
)
from trackline.collector.store.postgres import reads
from trackline.collector.store.postgres.connection import (
    Pool,
    Timeouts,
    Watchdog,
    conninfo,
    storage_error,
)
from trackline.collector.store.postgres.jobs import PostgresJobs
from trackline.collector.store.postgres.listener import Listener
from trackline.collector.store.postgres.partitions import Maintenance, Partitions
from trackline.collector.store.postgres.schema import key_secret, migrate
from trackline.collector.store.postgres.writer import PendingClear, Writer
from trackline.collector.store.url import redact

logger = logging.getLogger(__name__)

#: Seconds of arrivals one partition holds.
DEFAULT_PARTITION_SECONDS: Final = 86_400.0
#: Seconds between maintenance passes.
DEFAULT_MAINTENANCE_SECONDS: Final = 30.0
#: Extra seconds a whole transaction gets beyond one statement's bound, before the watchdog
#: drops its connection; with the statement's bound (twice the lock timeout), it stays inside
#: the collector's request deadline (lock timeout + 10 s) for lock timeouts up to 9 s.
_DEADLINE_MARGIN: Final = 1.0


class PostgresStore:
    """An event store in a PostgreSQL database (`url`, `postgresql://...`); safe to use from
    any thread, `close()` idempotent. See the package docstring for what it promises.

    `lock_timeout` bounds each lock wait; a write that cannot commit in time fails with
    `StorageError` (503). `fsync=True` insists on `synchronous_commit = on` whatever the
    server's default; otherwise the server's setting stands (on, unless changed). With
    `retention` (seconds), partitions whose newest event is older are dropped whole.
    """

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = 5.0,
        fsync: bool = False,
        retention: float | None = None,
        hub: EventHub | None = None,
        partition_seconds: float = DEFAULT_PARTITION_SECONDS,
        maintenance_seconds: float = DEFAULT_MAINTENANCE_SECONDS,
        read_connections: int = 6,
    ) -> None:
        if retention is not None and not retention > 0:
            raise ValueError(f"retention must be greater than zero, not {retention}")
        if not partition_seconds > 0:
            raise ValueError(
                f"partition_seconds must be greater than zero, not {partition_seconds}"
            )
        self.url = url
        self.hub = hub if hub is not None else EventHub()
        self._timeouts = Timeouts.from_lock_timeout(lock_timeout)
        self._fsync = fsync
        self._deadline = self._timeouts.statement + _DEADLINE_MARGIN
        self._closed = False
        self._token = uuid.uuid4().hex[:16]
        self._partitions = Partitions()
        self._jobs = PostgresJobs()
        self._maintenance = Maintenance(partition_seconds, retention)
        self._maintenance_seconds = maintenance_seconds
        self._stop = threading.Event()
        self._watchdog = Watchdog("trackline-pg-watchdog")
        try:
            with self._connect("setup") as conn:
                migrate(conn, redact(url))
                self._key_secret = key_secret(conn)
                self._maintenance.run(conn)
                self._partitions.load(conn)
        except psycopg.Error as exc:
            self._watchdog.stop()
            raise storage_error(exc, url) from exc
        except BaseException:
            self._watchdog.stop()
            raise
        self._pool = Pool(
            conninfo(url, self._timeouts, "reader"),
            url,
            read_connections,
            wait=self._deadline,
            watchdog=self._watchdog,
            deadline=self._deadline,
        )
        self._writer = Writer(
            lambda: self._connect("writer"),
            url,
            self.hub,
            self._partitions,
            self._watchdog,
            self._deadline,
            self._token,
            self._jobs,
        )
        self._listener = Listener(
            lambda: self._connect("listener"), self.hub, self._watchdog, self._deadline, self._token
        )
        self._upkeep = threading.Thread(
            target=self._maintain_forever, name="trackline-pg-maintenance", daemon=True
        )
        self._upkeep.start()

    def _connect(self, role: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(conninfo(self.url, self._timeouts, role), autocommit=True)
        if self._fsync:
            conn.execute("SET synchronous_commit = on")
        return conn

    @property
    def key_secret(self) -> bytes:
        """32 random bytes made once per database and kept in it, the same for every process
        sharing the store: key ids are keyed with them (see `Store.key_secret`)."""
        return self._key_secret

    # -- writing ---------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Rows handed to the writer and not yet committed or failed."""
        return self._writer.pending_rows

    @property
    def healthy(self) -> bool:
        """False when the last write failed (until one succeeds) or the store is closed."""
        return self._writer.healthy and not self._closed

    def submit(
        self, rows: Sequence[Row], rejected: int = 0, routes: Routes | None = None
    ) -> asyncio.Future[WriteResult]:
        """Write `rows` (and one job per destination `routes[i]` names for `rows[i]`) and
        count `rejected` messages, from a coroutine: await the result.

        The future fails with `StorageError` when the commit failed; nothing was stored then.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        try:
            self._writer.put(PendingWrite(rows, rejected, future, loop, routes))
        except StorageError as exc:
            future.set_exception(exc)
        return future

    def write(
        self,
        rows: Sequence[Row],
        rejected: int = 0,
        timeout: float | None = None,
        routes: Routes | None = None,
    ) -> WriteResult:
        """Write `rows` (and their jobs) from a plain thread and wait for the commit; raises
        `StorageError`."""
        future: concurrent.futures.Future[WriteResult] = concurrent.futures.Future()
        self._writer.put(PendingWrite(rows, rejected, future, None, routes))
        return future.result(timeout)

    def clear(self, timeout: float | None = None) -> int:
        """Delete every event and reset the counters (for every process sharing the
        database); returns how many events there were."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._writer.put(PendingClear(future))
        return future.result(timeout)

    # -- reading ---------------------------------------------------------------------------

    def events(self, query: EventQuery, *, meta: bool = False) -> bytes:
        """Stored messages matching `query`, newest first, as one JSON array; with `meta`,
        each is `{"id": row id, "source": key id, "message": {...}}`."""
        return b"".join(self.event_pieces(query, meta=meta))

    def event_pieces(
        self, query: EventQuery, *, meta: bool = False, lines: bool = False
    ) -> Generator[bytes, None, EventQuery | None]:
        """`events` in pieces of about 64 KB (NDJSON with `lines`); returns the next page's
        query (see `Store.event_pieces`). Close the generator if it is not read to the end
        (it holds a connection). Raises `ReadTooCostly` past the read budget."""
        return self._pool.stream(
            functools.partial(reads.listing, query=query, meta=meta, lines=lines)
        )

    def event(self, message_id: str) -> bytes | None:
        """The stored message with `message_id`, or None."""
        return self._pool.run(functools.partial(reads.event, message_id=message_id))

    def stats(self) -> Stats:
        """Totals by type and by source, and the duplicate, rejected and unroutable counts."""
        return self._pool.run(reads.stats)

    # -- delivery jobs (see jobs.py) -------------------------------------------------------

    def claim(self, destination: str, limit: int, lease: float) -> list[Job]:
        """Up to `limit` due jobs of `destination`, oldest first, held for `lease` seconds by
        this claim, whichever process asks (see `Store.claim`)."""
        return self._pool.run(lambda conn: self._jobs.claim(conn, destination, limit, lease))

    def settle(self, settlements: Sequence[Settlement], timeout: float | None = None) -> int:
        """End claims in one transaction; returns how many were still held by their claim.
        `timeout` is bounded by the store's own deadline."""
        if not settlements:
            return 0
        return self._pool.run(lambda conn: self._jobs.settle(conn, settlements))

    def destination_counts(self) -> list[DestinationCounts]:
        """Every destination that ever had a job: its jobs by state, last error and success."""
        return self._pool.run(self._jobs.destination_counts)

    def deliveries(self, message_id: str) -> list[EventDelivery] | None:
        """Where the event `message_id` stands with each destination, or None if unknown."""
        return self._pool.run(lambda conn: self._jobs.deliveries(conn, message_id))

    def replay(
        self,
        destination: str,
        *,
        failed_only: bool = False,
        since: str | None = None,
        selects: Callable[[str], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Queue stored events for `destination` again (see `Store.replay`); a chunk of
        events per transaction, each within the store's deadline."""
        queued = 0
        after: int | None = -1
        while after is not None:
            done, after = self._pool.run(
                functools.partial(
                    self._jobs.replay_chunk,
                    name=destination,
                    after=after,
                    failed_only=failed_only,
                    since=since,
                    selects=selects,
                )
            )
            queued += done
        return queued

    # -- upkeep ----------------------------------------------------------------------------

    def maintain(self) -> bool:
        """Run one maintenance pass now (see `partitions.Maintenance`); False when another
        process holds the maintenance lock. Raises `StorageError`."""

        def upkeep(conn: psycopg.Connection[Any]) -> bool:
            done = self._maintenance.run(conn)
            self._partitions.load(conn)
            return done

        return self._pool.run(upkeep)

    def _maintain_forever(self) -> None:
        while not self._stop.wait(self._maintenance_seconds):
            try:
                self.maintain()
            except StorageError as exc:
                logger.warning("maintenance skipped: %s", exc)
            except Exception:
                logger.exception("maintenance failed")

    @property
    def listening(self) -> threading.Event:
        """Set while other processes' live events reach this process's hub."""
        return self._listener.listening

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop every thread and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._writer.close(timeout)
        self._stop.set()
        self._listener.stop()
        self._upkeep.join(5.0)
        self._pool.close()
        self._watchdog.stop()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"
