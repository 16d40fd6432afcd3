"""The PostgreSQL store's writer: one thread, one connection, group commit, COPY.

Like the SQLite writer, it takes every write waiting and commits them in one transaction;
measured (bench/pg_drivers.py), that shape with COPY costs the least CPU on both sides of the
connection. A group's transaction:

1. takes the rotation lock shared (see `partitions.py`), a transaction id (claims of
   delivery jobs rely on it coming first, see `job_claims.py`), and one id block per `BLOCK`
   rows;
2. sets aside rows whose messageId came earlier in the group, or is stored in the partition
   before this one (one query, the ids sent as one JSON array);
3. COPYs the rest straight into `events` (binary). A messageId already stored in this
   partition fails the COPY; then the transaction starts over on the careful path: COPY into
   a temporary table and `INSERT ... ON CONFLICT DO NOTHING`. Resends are rare, so the common
   path pays for no conflict handling;
4. COPYs one delivery job per destination each stored row's route names (`jobs.py`);
5. appends the counts of what it stored (and the duplicate, rejected and unroutable counts)
   and notifies the other processes of the new id blocks, in one statement; then commits.

The SQL of these steps is in `group_sql.py`.

Only then are the requests answered and live subscribers of this process given the rows (from
memory: nothing is read back). A failed group fails every request in it with `StorageError`
(503) and stores nothing; the connection is dropped and opened again for the next group, after
a short pause so a database that is gone is not hammered.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import errors

from trackline.collector.ingest import Row
from trackline.collector.live import EventHub, LiveEvent
from trackline.collector.store.base import RowsRefused, StorageError, WriteResult
from trackline.collector.store.group import (
    PendingWrite,
    credit,
    fail_waiting,
    routes_per_row,
    settle,
    take_group,
)
from trackline.collector.store.postgres import group_sql
from trackline.collector.store.postgres.connection import Watchdog, storage_error
from trackline.collector.store.postgres.jobs import PostgresJobs
from trackline.collector.store.postgres.partitions import Partitions, part_of
from trackline.collector.store.postgres.schema import (
    BLOCK,
    LOCK_SPACE,
    ROTATE_LOCK,
    SCHEMA,
)

logger = logging.getLogger(__name__)

#: Rows per group commit at most, which bounds one transaction's length.
MAX_GROUP_ROWS: Final = 20_000
#: Seconds a failed connection attempt is not repeated (groups fail at once meanwhile).
RECONNECT_PAUSE: Final = 0.25
#: Seconds idle after which the connection is checked before a group uses it.
IDLE_PROBE_SECONDS: Final = 5.0


class _RowsFault(Exception):
    """The group failed on what its rows hold, not on the database."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclasses.dataclass(slots=True)
class PendingClear:
    future: concurrent.futures.Future[Any]


_STOP: Final = object()


class Writer:
    """The writer thread of one store. `connect()` opens its connection."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        url: str,
        hub: EventHub,
        partitions: Partitions,
        watchdog: Watchdog,
        deadline: float,
        token: str,
        jobs: PostgresJobs,
    ) -> None:
        self._connect = connect
        self._jobs = jobs
        self._url = url
        self._hub = hub
        self._partitions = partitions
        self._watchdog = watchdog
        self._deadline = deadline
        self._token = token
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending_lock = threading.Lock()
        self.pending_rows = 0
        self.healthy = True
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._failed_at = -RECONNECT_PAUSE
        self._used_at = 0.0
        self._last_error: StorageError | None = None
        self._thread = threading.Thread(target=self._run, name="trackline-pg-writer", daemon=True)
        self._thread.start()

    # -- the queue -------------------------------------------------------------------------

    def put(self, item: PendingWrite | PendingClear) -> None:
        if self._closed:
            raise StorageError("the store is closed")
        if isinstance(item, PendingWrite):
            if item.routes is not None and len(item.routes) != len(item.rows):
                raise ValueError("routes must have one entry per row")
            with self._pending_lock:
                self.pending_rows += len(item.rows)
        self._queue.put(item)

    def close(self, timeout: float | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("PostgreSQL writer still busy after %s s; leaving it", timeout)

    def _run(self) -> None:
        carry: object = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is _STOP:
                break
            if isinstance(item, PendingClear):
                self._clear(item)
                continue
            assert isinstance(item, PendingWrite)
            group, carry = take_group(self._queue, item, (PendingWrite,), MAX_GROUP_ROWS)
            self._write_group(group)
        fail_waiting(self._queue, StorageError("the store is closed"))
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the connection --------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            if time.monotonic() - self._used_at < IDLE_PROBE_SECONDS:
                return conn
            # Idle for a while: the server may have restarted or killed it meanwhile. A probe
            # now costs one round trip; finding out with a request's rows costs a 503.
            try:
                with self._watchdog.guard(conn, self._deadline):
                    conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                pass
        if time.monotonic() - self._failed_at < RECONNECT_PAUSE and self._last_error:
            raise self._last_error
        self._drop_connection()
        try:
            self._conn = self._connect()
            self._used_at = time.monotonic()
        except (psycopg.Error, StorageError) as exc:
            self._failed_at = time.monotonic()
            error = exc if isinstance(exc, StorageError) else storage_error(exc, self._url)
            self._last_error = error
            raise error from exc
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- a group ---------------------------------------------------------------------------

    def _write_group(self, group: list[PendingWrite]) -> None:
        outcomes: Sequence[object]
        try:
            outcomes, live = self._commit_with_retry(group)
            self.healthy = True
        except _RowsFault:
            outcomes, live = self._write_alone(group)
        except StorageError as exc:
            self.healthy = False
            logger.warning("storage write failed (%d requests answered 503): %s", len(group), exc)
            outcomes, live = [exc] * len(group), []
        except Exception as exc:
            self.healthy = False
            logger.exception("unexpected storage failure")
            outcomes, live = [StorageError(f"storage failure: {exc!r}")] * len(group), []
        with self._pending_lock:
            self.pending_rows -= sum(len(item.rows) for item in group)
        if live:
            self._hub.publish(live)
        settle(group, outcomes)

    def _write_alone(self, group: list[PendingWrite]) -> tuple[list[object], list[LiveEvent]]:
        """After a group failed on what its rows hold (text PostgreSQL cannot take: a NUL, an
        unpaired surrogate): each request again in its own transaction, so only the one that
        brought those rows fails, with `RowsRefused` (its answer is 400, not a 503 that the
        client would retry forever)."""
        outcomes: list[object] = []
        live: list[LiveEvent] = []
        for item in group:
            try:
                results, events = self._commit_with_retry([item])
                outcomes += results
                live += events
                self.healthy = True
            except _RowsFault as fault:
                # The text of the error may quote the value: only its kind is logged.
                logger.warning("a request's rows were refused by the store (%s)", fault.kind)
                outcomes.append(RowsRefused("the store cannot hold a value of this request"))
            except StorageError as exc:
                self.healthy = False
                outcomes.append(exc)
        return outcomes, live

    def _commit_with_retry(
        self, group: list[PendingWrite]
    ) -> tuple[list[WriteResult], list[LiveEvent]]:
        careful = False
        for attempt in range(3):
            conn = self._connection()
            try:
                with self._watchdog.guard(conn, self._deadline):
                    return self._commit(conn, group, careful)
            except group_sql.Conflict:
                careful = True
            except (psycopg.DataError, UnicodeError, orjson.JSONEncodeError) as exc:
                raise _RowsFault(type(exc).__name__) from None
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                # Two processes storing the same messageIds in opposite orders: one of them
                # is told to start over, which then finds the other's rows stored.
                if attempt == 2:
                    raise storage_error(exc, self._url) from exc
                careful = True
            except errors.UndefinedTable as exc:
                # A partition was dropped under this process's feet: learn which exist.
                self._partitions.load(conn)
                if attempt == 2:
                    raise storage_error(exc, self._url) from exc
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    self._drop_connection()
                raise storage_error(exc, self._url) from exc
            finally:
                self._used_at = time.monotonic()
        raise AssertionError("unreachable")

    def _commit(
        self, conn: psycopg.Connection[Any], group: list[PendingWrite], careful: bool
    ) -> tuple[list[WriteResult], list[LiveEvent]]:
        rows = [row for item in group for row in item.rows]
        rejected = sum(item.rejected for item in group)
        routes = routes_per_row(group)
        names = {name for route in routes if route for name in route}
        if names:
            self._jobs.ids(conn, names, create=True)  # committed before, on its own
        with conn.transaction(), conn.cursor() as cur:
            # The transaction id comes before any id is taken: claims' floors rely on it (see
            # jobs.py). On a standby this fails: a health probe proves writes are taken.
            cur.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, %s), pg_current_xact_id()",
                (LOCK_SPACE, ROTATE_LOCK),
            )
            found = cur.execute(
                f"SELECT ARRAY(SELECT nextval('{SCHEMA}.event_blocks') "
                "FROM generate_series(1, %s))",
                (-(-len(rows) // BLOCK),),
            ).fetchone()
            assert found is not None
            starts: list[int] = found[0]
            ids = self._ids(conn, rows, starts)
            fresh = group_sql.new_rows(conn, self._partitions, rows, ids)
            if fresh:
                if careful:
                    stored = group_sql.insert_carefully(cur, rows, ids, fresh)
                else:
                    group_sql.copy_rows(cur, rows, ids, fresh)
                    stored = set(fresh)
            else:
                stored = set()
            unroutable = 0
            if stored and any(route != () for route in routes):
                unroutable = self._jobs.enqueue(cur, rows, routes, ids, stored)
            group_sql.bookkeeping(cur, rows, ids, stored, rejected, unroutable, self._token)
        flags = [index in stored for index in range(len(rows))]
        results = credit(group, flags)
        live: list[LiveEvent] = []
        if stored and self._hub.has_subscribers:
            live = [
                LiveEvent(ids[index], rows[index].body, rows[index].source)
                for index in sorted(stored)
            ]
        return results, live

    def _ids(
        self, conn: psycopg.Connection[Any], rows: Sequence[Row], starts: Sequence[int]
    ) -> list[int]:
        """The id of each row: consecutive within each block of `BLOCK` rows."""
        if any(not self._partitions.knows(part_of(start)) for start in starts):
            self._partitions.load(conn)  # writing moved on to a partition made since
        return [starts[index // BLOCK] + index % BLOCK for index in range(len(rows))]

    # -- clear -----------------------------------------------------------------------------

    def _clear(self, item: PendingClear) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            conn = self._connection()
            try:
                with self._watchdog.guard(conn, self._deadline), conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, ROTATE_LOCK))
                    conn.execute(f"LOCK TABLE {group_sql.CLEARED} IN ACCESS EXCLUSIVE MODE")
                    row = conn.execute(
                        f"SELECT coalesce(sum(n), 0) FROM {SCHEMA}.event_counts"
                    ).fetchone()
                    conn.execute(f"TRUNCATE {group_sql.CLEARED}")
                self._jobs.forget()
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    self._drop_connection()
                raise storage_error(exc, self._url) from exc
        except StorageError as exc:
            item.future.set_exception(exc)
        else:
            assert row is not None
            item.future.set_result(int(row[0]))
