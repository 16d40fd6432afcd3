"""The collector's SQLite store: one writer thread with group commit, readers on their own
connections.

Why one writer that groups requests: SQLite takes one writer at a time, and a commit costs far
more than a row, so the writer takes every request waiting when it is free and commits them in
one transaction. Under load the groups grow by themselves, which keeps the store ahead of the
HTTP side. Each group is written with as few SQLite calls as possible, because every call
releases the GIL and must win it back from the busy event loop thread: rows go in through
multi-row `INSERT` statements, not one call per row.

A request is answered 200 only after its group committed (WAL, so a committed group survives
a killed process); if the commit fails because the database cannot write, every request of the
group fails and nothing of it is stored, and the next group simply tries again. If it fails
because of what some rows hold, each request is written again alone, so only the one that
brought those rows fails.

Reads stream: a listing goes out in pieces as SQLite produces its rows, so the largest answer
costs a piece's memory, not its own size; and a read's database work has a time budget.

The same thread writes the delivery jobs (`sqlite_jobs.py`): an event's jobs go in with the
event, and settlements ride in the next group commit with the requests. Claims only read, on a
connection of their own, so they never wait for a group to commit. With a retention, old
events are deleted on this thread as well, a chunk between two groups (`sqlite_retention.py`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from trackline.collector.ingest import Row
from trackline.collector.live import EventHub, LiveEvent
from trackline.collector.store import sqlite_jobs, sqlite_keys, sqlite_retention, sqlite_setup
from trackline.collector.store.base import (
    MAX_SCAN_ROWS,
    READ_BUDGET_SECONDS,
    EventQuery,
    ReadTooCostly,
    RowsRefused,
    Stats,
    StorageError,
    WriteResult,
)
from trackline.collector.store.filters import filter_conditions
from trackline.collector.store.group import (
    PendingWrite,
    fail_waiting,
    routes_per_row,
    settle,
    take_group,
)
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    Routes,
    Settlement,
)
from trackline.collector.store.pages import Page, following
from trackline.collector.store.sqlite_checkpoints import Checkpointer
from trackline.collector.store.sqlite_setup import SCHEMA_VERSION

logger = logging.getLogger(__name__)

#: Rows per group commit at most, which bounds how long one transaction holds the write lock.
MAX_GROUP_ROWS: Final = 20_000
#: Rows per INSERT statement at most (SQLite also caps the number of parameters).
MAX_ROWS_PER_STATEMENT: Final = 2000
#: Page size of a new file. Each event written into an index of random keys dirties a page of
#: that index, and a dirty page goes whole into the write-ahead log and again into the file at
#: the checkpoint: 4 KB pages write an eighth of what 32 KB ones did, and 2 KB pages half of
#: that again: at ten million events 2 KB pages stored 17% to 36% more events/s than 4 KB (two
#: runs), at three million 11% more, on an empty store the same; 1 KB pages were slower at
#: every size (the rows themselves, about 800 bytes, then take a page each). See bench/curve.py.
PAGE_SIZE: Final = 2048
#: The writer's page cache, KB.
CACHE_KB: Final = 32 * 1024
#: Write-ahead log a commit lets grow before it copies the log into the file (a checkpoint,
#: which syncs the file): a page changed by several commits in that span is copied once, and
#: the writer syncs less often. SQLite's default is 1,000 pages (4 MB at 4 KB pages), which
#: measured slower; 64 MB measured no faster than 16 MB and doubled the p99 (each checkpoint
#: runs inside the commit that crosses the mark). The checkpointer thread
#: (`sqlite_checkpoints.py`) copies the log before that, so this is the log's bound.
CHECKPOINT_BYTES: Final = 16 * 1024 * 1024
#: What the log file is cut back to after a checkpoint, if it grew larger.
WAL_LIMIT_BYTES: Final = 2 * CHECKPOINT_BYTES

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS event_counts (
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (type, source)
) WITHOUT ROWID;
-- Counted per transaction (see _COUNT_NEW_ROWS), not by a per-row trigger, which cost a third
-- of the insert time; early stores had the trigger.
DROP TRIGGER IF EXISTS events_counted;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    duplicates INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    unroutable INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO totals (id, duplicates, rejected) VALUES (1, 0, 0);
-- Values the store keeps about itself (the key id secret).
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""
#: SQLite virtual machine steps between two looks at a read's time budget.
_BUDGET_STEPS: Final = 1000

#: Filters that no index serves here besides `q` and `source` (schema 4 dropped their
#: indexes): a page of a query with one scans a window of `MAX_SCAN_ROWS` row ids.
_UNINDEXED: Final = ("user_id", "anonymous_id")

_COLUMNS: Final = ", ".join(Row._fields)
#: Adds the rows above a row id to the per-type, per-source counts, in one statement. Run in
#: the transaction that inserted them, it counts exactly the new rows: the writer holds the
#: write lock and new ids are above every earlier one; an ignored duplicate adds no row.
#: NOT INDEXED: left to itself, SQLite's planner reads the `type` index whole for its GROUP BY
#: and checks every entry's row id, one pass over the store per commit (what made the write
#: rate fall as the store grew); without an index it seeks the new rows by row id.
_COUNT_NEW_ROWS: Final = """
INSERT INTO event_counts (type, source, n)
SELECT type, source, count(*) FROM events NOT INDEXED WHERE id > ? GROUP BY type, source
ON CONFLICT (type, source) DO UPDATE SET n = n + excluded.n
"""
#: An event with its row id and source, composed as text: the body is already JSON.
_META_ITEM: Final = (
    """'{"id":' || id || ',"source":' || json_quote(source) || ',"message":' || body || '}'"""
)


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(" + ",".join("?" * (len(Row._fields) + 1)) + ")"] * rows)
    return f"INSERT INTO events ({_COLUMNS}, message_key) VALUES {values}"


@dataclasses.dataclass(slots=True)
class _Settle:
    """Settlements, committed with the next group of writes."""

    settlements: Sequence[Settlement]
    future: concurrent.futures.Future[Any]
    loop: None = None
    rows: Sequence[Row] = ()


@dataclasses.dataclass(slots=True)
class _Clear:
    future: concurrent.futures.Future[Any]


@dataclasses.dataclass(slots=True)
class _Expire:
    """A retention pass asked for now; the future gets how many events it deleted."""

    future: concurrent.futures.Future[int]


@dataclasses.dataclass(slots=True)
class _Call:
    """Work that needs the writer thread alone (a claim, a replay): `run(conn)`."""

    run: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any]


_STOP: Final = object()


class SQLiteStore:
    """An event store in one SQLite file; safe to use from any thread, `close()` idempotent.

    `lock_timeout` is how long a commit waits for a lock another connection holds before the
    write fails (and the request gets 503). `fsync=True` makes each commit survive power loss
    (synchronous=FULL); by default a commit survives a killed process, not a power cut.

    With `retention` (seconds), events received longer ago are deleted with their outcomes
    and owed jobs (see `sqlite_retention.py`): at open, then every `retention_period`
    seconds, `retention_chunk_rows` events per transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float = 5.0,
        fsync: bool = False,
        hub: EventHub | None = None,
        retention: float | None = None,
        retention_period: float = sqlite_retention.PERIOD_SECONDS,
        retention_chunk_rows: int = sqlite_retention.CHUNK_ROWS,
    ) -> None:
        self._retention = (
            None
            if retention is None
            else sqlite_retention.Retention(
                retention, chunk_rows=retention_chunk_rows, period=retention_period
            )
        )
        self.path = Path(path)
        self.hub = hub if hub is not None else EventHub()
        self._lock_timeout = lock_timeout
        self._fsync = fsync
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending_lock = threading.Lock()
        self._pending_rows = 0
        self._closed = False
        self._healthy = True
        self._jobs = sqlite_jobs.SQLiteJobs()
        self._claim_conn: sqlite3.Connection | None = None
        self._conn: sqlite3.Connection | None = None
        self._key_secret = b""
        self._conn = self._connect(create=True)
        self._message_keys = sqlite_keys.MessageKeys(self._key_secret)
        self._checkpointer = Checkpointer(
            self._connect_checkpointer, name=f"trackline-checkpoint:{self.path.name}"
        )
        self._thread = threading.Thread(
            target=self._run, name=f"trackline-storage:{self.path.name}", daemon=True
        )
        self._thread.start()

    # -- connections ---------------------------------------------------------------------

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        try:
            if create:
                sqlite_setup.create_private(self.path)
            conn = sqlite3.connect(
                self.path, timeout=self._lock_timeout, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        try:
            if create:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # applies to a new file only
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.path} was written by a newer trackline (schema {version})"
                    )
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(sqlite_setup.EVENTS_TABLE + _SCHEMA + sqlite_jobs.SCHEMA)
                self._key_secret = sqlite_setup.key_secret(conn)
                if version < SCHEMA_VERSION:
                    sqlite_setup.upgrade(conn, self.path, self._key_secret)
                conn.executescript(sqlite_setup.EVENTS_INDEXES)
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._fsync else 'NORMAL'}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KB}")
            # A file made before PAGE_SIZE keeps its page size: the same bytes, fewer pages.
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_BYTES // page_size}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot use {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._lock_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous = {'FULL' if self._fsync else 'NORMAL'}")
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A short-lived read-only connection: WAL lets it read while the writer writes.

        It may be used from several threads in turn (a streamed listing continues on whichever
        worker thread is free), never from two at once."""
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._lock_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA query_only = 1")
            yield conn
        finally:
            conn.close()

    @property
    def key_secret(self) -> bytes:
        """The store's key id secret (see `Store.key_secret`)."""
        return self._key_secret

    # -- writing -------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        """Rows handed to the writer and not yet committed or failed."""
        return self._pending_rows

    @property
    def healthy(self) -> bool:
        """False when the last write failed (until one succeeds) or the store is closed."""
        return self._healthy and not self._closed

    def _enqueue(self, item: PendingWrite | _Settle | _Clear | _Call | _Expire) -> None:
        if self._closed:
            raise StorageError("the store is closed")
        if isinstance(item, PendingWrite):
            if item.routes is not None and len(item.routes) != len(item.rows):
                raise ValueError("routes must have one entry per row")
            with self._pending_lock:
                self._pending_rows += len(item.rows)
        self._queue.put(item)

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
            self._enqueue(PendingWrite(rows, rejected, future, loop, routes))
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
        self._enqueue(PendingWrite(rows, rejected, future, None, routes))
        return future.result(timeout)

    def clear(self, timeout: float | None = None) -> int:
        """Delete every event and job and reset the counters; returns how many events there
        were."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._enqueue(_Clear(future))
        return future.result(timeout)

    def expire(self, timeout: float | None = None) -> int:
        """Run a retention pass now (or wait for the one underway) and return how many
        events it deleted; 0 when the store has no retention. Its chunks still take turns
        with the group commits. Raises `StorageError` when a chunk could not be deleted or
        the store closed first."""
        try:
            return self.expire_soon().result(timeout)
        except TimeoutError:
            raise StorageError("the retention pass did not end in time") from None

    def expire_soon(self) -> concurrent.futures.Future[int]:
        """`expire` without waiting: the pass is queued behind what the writer has queued
        now, and the future gets its result (or `StorageError`)."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        if self._retention is None:
            future.set_result(0)
            return future
        self._enqueue(_Expire(future))
        return future

    def _call(self, run: Callable[[sqlite3.Connection], Any], timeout: float | None) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._enqueue(_Call(run, future))
        try:
            return future.result(timeout)
        except TimeoutError:
            raise StorageError("the store did not answer in time") from None

    def _run(self) -> None:
        carry: object = None
        retention = self._retention
        while True:
            # A due chunk goes first even when a group left work behind (`carry`): under
            # sustained load the queue is never empty, and the retention must still advance.
            if retention is not None and retention.due():
                self._expire_step(retention)
            if carry is not None:
                item, carry = carry, None
            else:
                try:
                    item = self._queue.get(
                        timeout=None if retention is None else retention.wait_seconds()
                    )
                except queue.Empty:
                    continue
            if item is _STOP:
                break
            if isinstance(item, _Expire):
                assert retention is not None  # queued only by a store with a retention
                retention.request(item.future)
                continue
            if isinstance(item, _Clear):
                self._clear(item)
                continue
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            assert isinstance(item, PendingWrite | _Settle)
            group, carry = take_group(self._queue, item, (PendingWrite, _Settle), MAX_GROUP_ROWS)
            self._write_group(group)
        fail_waiting(self._queue, StorageError("the store is closed"))
        if retention is not None:
            retention.abandon(StorageError("the store is closed"))
        self._checkpointer.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._jobs.lock:
            if self._claim_conn is not None:
                self._claim_conn.close()
                self._claim_conn = None

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Roll back after a failure; a connection that cannot even do that is reopened."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            self._conn = None

    def _write_group(self, group: list[PendingWrite | _Settle]) -> None:
        outcomes: list[WriteResult | int | BaseException]
        try:
            outcomes = list(self._commit(group))
            self._healthy = True
        except Exception as exc:
            if _about_the_rows(exc):
                outcomes = self._write_alone(group, exc)
            else:
                self._healthy = False
                logger.warning(
                    "storage write failed (%d requests answered 503): %s", len(group), exc
                )
                outcomes = [StorageError(f"storage unavailable: {exc}")] * len(group)
        with self._pending_lock:
            self._pending_rows -= sum(len(item.rows) for item in group)
        self._answer(group, outcomes)

    def _write_alone(
        self, group: list[PendingWrite | _Settle], first: Exception
    ) -> list[WriteResult | int | BaseException]:
        """After a group failed on what its rows hold: each request again, in its own commit,
        so only the one that brought those rows fails."""
        if len(group) == 1:
            # The exception's text may quote the value: only its kind is logged.
            logger.warning("a request's rows were refused by the store (%s)", type(first).__name__)
            return [RowsRefused("the store cannot hold a value of this request")]
        outcomes: list[WriteResult | int | BaseException] = []
        for item in group:
            try:
                outcomes += self._commit([item])
                self._healthy = True
            except Exception as exc:
                if _about_the_rows(exc):
                    kind = type(exc).__name__
                    logger.warning("a request's rows were refused by the store (%s)", kind)
                    outcomes.append(RowsRefused("the store cannot hold a value of this request"))
                else:
                    self._healthy = False
                    outcomes.append(StorageError(f"storage unavailable: {exc}"))
        return outcomes

    def _commit(self, group: list[PendingWrite | _Settle]) -> list[WriteResult | int]:
        conn = self._writer()
        writes = [item for item in group if isinstance(item, PendingWrite)]
        rows = [row for item in writes for row in item.rows]
        live: list[LiveEvent] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # AUTOINCREMENT: new ids follow the last one ever given, in insertion order.
            (last_id,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
            keys = [self._message_keys(row.message_id) for row in rows]
            fresh = sqlite_keys.new_rows(conn, [row.message_id for row in rows], keys)
            stored = [(*row, key) for row, key, new in zip(rows, keys, fresh, strict=True) if new]
            inserted = len(stored)
            for start in range(0, inserted, MAX_ROWS_PER_STATEMENT):
                part = stored[start : start + MAX_ROWS_PER_STATEMENT]
                conn.execute(_insert_sql(len(part)), list(itertools.chain(*part)))
            if inserted:
                conn.execute(_COUNT_NEW_ROWS, (last_id,))
            duplicates = len(rows) - inserted
            rejected = sum(item.rejected for item in writes)
            unroutable = 0
            if inserted and any(item.routes is not None for item in writes):
                unroutable = self._jobs.enqueue(
                    conn, rows, routes_per_row(writes), _event_ids(fresh, last_id)
                )
            settles = [item for item in group if isinstance(item, _Settle)]
            if not rows and not rejected and not settles:
                # A health probe: prove a page can be written, not only that a lock is free.
                conn.execute("UPDATE totals SET rejected = rejected")
            elif duplicates or rejected or unroutable:
                conn.execute(
                    "UPDATE totals SET duplicates = duplicates + ?, rejected = rejected + ?, "
                    "unroutable = unroutable + ?",
                    (duplicates, rejected, unroutable),
                )
            if inserted and self.hub.has_subscribers:
                live = [
                    LiveEvent(row_id, body, source)
                    for row_id, body, source in self._newest(conn, "id, body, source", inserted)
                ]
            # Last, so that the claims' lock is held for as short a time as possible.
            settled = [self._jobs.settle(conn, item.settlements) for item in settles]
            conn.execute("COMMIT")
        except BaseException:
            self._jobs.rolled_back()
            self._abort(conn)
            raise
        self._jobs.committed()
        self._checkpointer.nudge()
        if live:
            self.hub.publish(live)
        results = iter(settled)
        answers = iter(_attribute(writes, fresh))
        return [
            next(answers) if isinstance(item, PendingWrite) else next(results) for item in group
        ]

    @staticmethod
    def _newest(conn: sqlite3.Connection, columns: str, count: int) -> list[list[Any]]:
        """`columns` of the newest `count` rows, oldest first, in one call (not one per row).

        Rows of this transaction are exactly the newest ones: the writer holds the write lock
        and every new row id is above every earlier one (ids may skip, never go back).
        """
        (text,) = conn.execute(
            f"SELECT json_group_array(json_array({columns})) FROM "
            f"(SELECT {columns} FROM events ORDER BY id DESC LIMIT ?)",
            (count,),
        ).fetchone()
        rows: list[list[Any]] = orjson.loads(text)
        rows.reverse()
        return rows

    def _clear(self, item: _Clear) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
                (count,) = conn.execute("SELECT coalesce(sum(n), 0) FROM event_counts").fetchone()
                conn.execute("DELETE FROM events")
                conn.execute("DELETE FROM event_counts")
                conn.execute("UPDATE totals SET duplicates = 0, rejected = 0, unroutable = 0")
                self._jobs.clear(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._abort(conn)
                raise
        except (sqlite3.Error, StorageError) as exc:
            item.future.set_exception(StorageError(f"storage unavailable: {exc}"))
        else:
            item.future.set_result(count)

    def _expire_step(self, retention: sqlite_retention.Retention) -> None:
        """One chunk of the retention; a failure ends the pass, and the next group of writes
        finds the connection rolled back (or reopened) as after any failed commit."""
        try:
            retention.step(self._writer(), self._jobs)
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error | StorageError):
                logger.exception("unexpected failure deleting old events")
            self._jobs.rolled_back()
            if self._conn is not None:
                self._abort(self._conn)
            retention.failed(StorageError(f"storage unavailable: {exc!r}"))

    def _run_call(self, item: _Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            result = item.run(self._writer())
        except (sqlite3.Error, StorageError) as exc:
            self._jobs.rolled_back()
            if self._conn is not None:
                self._abort(self._conn)
            item.future.set_exception(StorageError(f"storage unavailable: {exc}"))
        except BaseException as exc:
            logger.exception("unexpected storage failure")
            if self._conn is not None:
                self._abort(self._conn)
            item.future.set_exception(StorageError(f"storage failure: {exc!r}"))
        else:
            item.future.set_result(result)

    @staticmethod
    def _answer(
        group: Sequence[PendingWrite | _Settle],
        outcomes: Sequence[WriteResult | int | BaseException],
    ) -> None:
        """Hand results back; one wake-up per event loop, not one per request."""
        settle(group, outcomes)

    # -- delivery jobs -------------------------------------------------------------------

    def claim(self, destination: str, limit: int, lease: float) -> list[Job]:
        """Up to `limit` due jobs of `destination`, oldest first, held for `lease` seconds
        (see `Store.claim`), read on the claims' own connection."""
        if self._closed:
            raise StorageError("the store is closed")
        try:
            with self._jobs.lock:
                if self._claim_conn is None:
                    self._claim_conn = sqlite3.connect(
                        self.path,
                        timeout=self._lock_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    self._claim_conn.execute("PRAGMA query_only = 1")
                conn = self._claim_conn
            return self._jobs.claim(conn, destination, limit, lease)
        except sqlite3.Error as exc:
            raise StorageError(f"storage unavailable: {exc}") from exc

    def settle(self, settlements: Sequence[Settlement], timeout: float | None = None) -> int:
        """End claims; committed with the next group of writes. Returns how many were still
        held by their claim."""
        if not settlements:
            return 0
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._enqueue(_Settle(settlements, future))
        try:
            return future.result(self._lock_timeout + 30.0 if timeout is None else timeout)
        except TimeoutError:
            raise StorageError("the store did not commit the settlements in time") from None

    def replay(
        self,
        destination: str,
        *,
        failed_only: bool = False,
        since: str | None = None,
        selects: Callable[[str], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Queue stored events for `destination` again (see `Store.replay`): a chunk at a
        time, read and chosen on this thread, queued by the writer between group commits."""
        queued = 0
        after = -1
        while True:
            with self._reader() as conn:
                candidates = self._jobs.replay_candidates(
                    conn, destination, after, failed_only=failed_only, since=since
                )
            if not candidates:
                return queued
            after = candidates[-1][0]
            chosen = [
                (event_id, key)
                for event_id, key, body in candidates
                if failed_only or selects is None or selects(body)
            ]
            if chosen:
                queued += int(
                    self._call(
                        functools.partial(self._jobs.requeue, name=destination, chosen=chosen),
                        timeout,
                    )
                )

    def destination_counts(self) -> list[DestinationCounts]:
        """Every destination that ever had a job: its jobs by state, last error and success."""
        with self._reader() as conn:
            return sqlite_jobs.destination_counts(conn)

    def deliveries(self, message_id: str) -> list[EventDelivery] | None:
        """Where the event `message_id` stands with each destination, or None if unknown."""
        with self._reader() as conn:
            found = sqlite_keys.find_event(conn, self._message_keys, message_id, "id")
            return None if found is None else sqlite_jobs.deliveries(conn, found[0])

    # -- reading -------------------------------------------------------------------------

    def events(self, query: EventQuery, *, meta: bool = False) -> bytes:
        """Stored messages matching `query`, newest first, as one JSON array; with `meta`,
        each is `{"id": row id, "source": key id, "message": {...}}`."""
        return b"".join(self.event_pieces(query, meta=meta))

    def event_pieces(
        self, query: EventQuery, *, meta: bool = False, lines: bool = False
    ) -> Generator[bytes, None, EventQuery | None]:
        """`events` in pieces of about 64 KB (NDJSON with `lines`); returns the next page's
        query (see `Store.event_pieces`). Close the generator if it is not read to the end
        (it holds a connection).

        The window of a `windowed` query is `MAX_SCAN_ROWS` row ids below `before_id` (or
        above `after_id`): row ids are never reused (AUTOINCREMENT), so that is at most as
        many rows (fewer where a clear or the retention deleted some), and the window's edge
        is known without counting rows. Rows the retention deletes during a walk are simply
        not on its later pages; the cursor only moves on, so none is seen twice."""
        clauses, params = filter_conditions(query, placeholder="?", like="LIKE")
        return self._page(query, clauses, params, meta=meta, lines=lines)

    def _page(
        self,
        query: EventQuery,
        clauses: list[str],
        params: list[object],
        *,
        meta: bool,
        lines: bool,
    ) -> Generator[bytes, None, EventQuery | None]:
        budget = _Budget(READ_BUDGET_SECONDS)
        page = Page(query, lines=lines)
        item = _META_ITEM if meta else "body"
        with self._reader() as conn:
            conn.set_progress_handler(budget.exceeded, _BUDGET_STEPS)
            try:
                budget.resume()
                lowest, highest = conn.execute(
                    "SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)"
                ).fetchone()
                if highest is None:
                    budget.pause()
                    yield page.end()
                    return None
                edge: int | None = None
                until = highest
                if query.ascending:
                    start = max(query.after_id or 0, lowest - 1)
                    if query.until_id is not None:
                        until = query.until_id
                    top = until
                    if _windowed(query) and start + MAX_SCAN_ROWS < until:
                        top = edge = start + MAX_SCAN_ROWS
                    clauses += ["id > ?", "id <= ?"]
                    params += [start, top]
                    order = "ASC"
                else:
                    below = highest + 1 if query.before_id is None else query.before_id
                    clauses.append("id < ?")
                    params.append(below)
                    if _windowed(query) and below - MAX_SCAN_ROWS > lowest:
                        edge = below - MAX_SCAN_ROWS
                        clauses.append("id >= ?")
                        params.append(edge)
                    order = "DESC"
                sql = (
                    f"SELECT id, {item} FROM events WHERE {' AND '.join(clauses)} "
                    f"ORDER BY id {order} LIMIT ?"
                )
                cursor = conn.execute(sql, (*params, query.limit + 1))
                while rows := cursor.fetchmany(128):
                    piece = page.add(rows)
                    if piece is not None:
                        budget.pause()
                        yield piece
                        budget.resume()
                budget.pause()
                yield page.end()
            except sqlite3.OperationalError as exc:
                if budget.spent:
                    raise ReadTooCostly(f"stopped after {budget.limit} s") from None
                raise StorageError(f"cannot read {self.path}: {exc}") from exc
        return following(query, page, edge=edge, until=until)

    def event(self, message_id: str) -> bytes | None:
        """The stored message with `message_id`, or None."""
        with self._reader() as conn:
            found = sqlite_keys.find_event(conn, self._message_keys, message_id, "body")
        return None if found is None else str(found[0]).encode()

    def stats(self) -> Stats:
        """Totals by type and by source, and the duplicate and rejected counts."""
        with self._reader() as conn:
            counts = conn.execute("SELECT type, source, n FROM event_counts").fetchall()
            duplicates, rejected, unroutable = conn.execute(
                "SELECT duplicates, rejected, unroutable FROM totals"
            ).fetchone()
        by_type: dict[str, int] = {}
        by_source: dict[str, int] = {}
        for kind, source, n in counts:
            by_type[kind] = by_type.get(kind, 0) + n
            by_source[source] = by_source.get(source, 0) + n
        return Stats(sum(by_type.values()), by_type, by_source, duplicates, rejected, unroutable)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop the writer and close the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("storage writer still busy after %s s; leaving it", timeout)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


def _event_ids(fresh: Sequence[bool], last_id: int) -> list[int | None]:
    """Each row's new event id, None where the row was not stored (a duplicate): the stored
    rows took consecutive ids from `last_id` on, in order (one writer holds the write lock)."""
    ids: list[int | None] = []
    next_id = last_id
    for new in fresh:
        if new:
            next_id += 1
            ids.append(next_id)
        else:
            ids.append(None)
    return ids


def _windowed(query: EventQuery) -> bool:
    """Whether a page of `query` scans a window (`EventQuery.windowed`, and here also the
    filters of `_UNINDEXED`)."""
    return query.windowed or any(getattr(query, column) is not None for column in _UNINDEXED)


def _about_the_rows(exc: Exception) -> bool:
    """Whether a failed commit failed on what the rows hold (a value SQLite cannot take), not
    on the database (locked, full, unreadable: OperationalError and its base)."""
    if isinstance(exc, StorageError | sqlite3.OperationalError):
        return False
    return type(exc) is not sqlite3.DatabaseError


class _Budget:
    """Seconds of database work a read may take, counted only while the read runs (not while
    its pieces wait for the client); SQLite's progress handler asks `exceeded`."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.spent = False
        self._used = 0.0
        self._since: float | None = None

    def resume(self) -> None:
        self._since = time.monotonic()

    def pause(self) -> None:
        if self._since is not None:
            self._used += time.monotonic() - self._since
            self._since = None

    def exceeded(self) -> bool:
        running = 0.0 if self._since is None else time.monotonic() - self._since
        self.spent = self._used + running > self.limit
        return self.spent


def _attribute(group: list[PendingWrite], fresh: Sequence[bool]) -> list[WriteResult]:
    """Each request's stored and duplicate counts, from whether each of the group's rows (in
    order) was stored: a messageId sent twice in one group counts for its first request."""
    results = []
    start = 0
    for item in group:
        accepted = sum(fresh[start : start + len(item.rows)])
        results.append(WriteResult(accepted, len(item.rows) - accepted))
        start += len(item.rows)
    return results
