"""Delivery jobs in the SQLite store: the queue, how jobs ended, and the per-destination counts.

Writes run on the store's writer thread, inside its transactions; claims run on the calling
router's thread with a read connection of their own, so they never hold up a commit. The
claims' leases live in memory: one process owns a SQLite store, and a process that dies takes
its leases with it, which is exactly when they should end (its jobs are claimable again at
once after a restart, with no lease to wait out).

One lock (`SQLiteJobs.lock`) keeps claims and settlements consistent: a claim holds it while it
reads the queue and takes its leases; the writer holds it from checking the settlements' leases
until their transaction committed and the leases ended. So a claim never sees a job that a
committed settlement removed while its lease still shows as held, nor the reverse.

Three tables, sized by what is owed rather than by history:

- `jobs` holds only jobs still owed, keyed `(destination, event_id)` without a rowid, so a
  destination's queue is one contiguous range of the b-tree in stored order: a claim reads the
  head of its range, a delivered job is deleted from it, a retry updates one small row. It
  stays as small as the backlog, however long the collector runs.
- `outcomes` records how each job ended, one row per event and destination, appended when the
  job ends (replaced only when a replayed job ends again); the per-event delivery view and the
  dead letters (`status = 'failed'`, with their own partial index) read it.
- `destinations` keeps each destination's counts by state, changed by the same transactions
  that change the jobs, so reading them costs one row per destination however deep the queue.

Measured against the alternative of one table holding every job with its state updated in
place (the shape PostgreSQL's MVCC punishes, and the one rudder-server's jobsdb avoids), this
layout is what SQLite wants as well: see docs/architecture.md, "Delivery jobs".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from trackline.collector.ingest import Row
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    JobStatus,
    Outcome,
    Route,
    Settlement,
    error_text,
    order_key,
)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS destinations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pending INTEGER NOT NULL DEFAULT 0,
    retrying INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at TEXT,
    last_success_at TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    destination INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    order_key INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    last_error TEXT,
    PRIMARY KEY (destination, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    event_id INTEGER NOT NULL,
    destination INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (event_id, destination)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_failed ON outcomes (destination, event_id)
    WHERE status = 'failed';
"""

#: Job rows per INSERT statement (three parameters each).
JOB_ROWS_PER_STATEMENT: Final = 3000
#: Queue rows one claim reads at most looking for claimable jobs: a claim behind that many
#: held or blocked jobs finds nothing this time (the head moves as they end).
MAX_CLAIM_SCAN: Final = 50_000
_MAX_SCAN_PAGE: Final = 5000
#: Events one replay step reads (on the caller's thread) and queues (in one transaction on
#: the writer), so a large backfill never holds up ingest for long.
REPLAY_CHUNK: Final = 5000


@functools.lru_cache(maxsize=64)
def _insert_jobs_sql(rows: int) -> str:
    values = ",".join(["(?,?,?)"] * rows)
    return f"INSERT OR IGNORE INTO jobs (destination, event_id, order_key) VALUES {values}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclasses.dataclass(slots=True)
class _Delta:
    """Changes to one destination's counts within one transaction."""

    pending: int = 0
    retrying: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_success_at: str | None = None


class SQLiteJobs:
    """The job side of one SQLite store: queueing and settling on the writer thread, claims
    from any thread under `lock` (reads of counts and deliveries need nothing from here)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._ids: dict[str, int] = {}
        #: (destination id, job id) -> (claim, monotonic expiry) for every job handed out.
        self._leases: dict[tuple[int, int], tuple[int, float]] = {}
        self._claims = itertools.count(1)
        #: Leases to forget once the transaction that settled them commits.
        self._ending: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self._locked = False

    # -- destinations --------------------------------------------------------------------

    def _id(self, conn: sqlite3.Connection, name: str, *, create: bool) -> int | None:
        found = self._ids.get(name)
        if found is not None:
            return found
        row = conn.execute("SELECT id FROM destinations WHERE name = ?", (name,)).fetchone()
        if row is None:
            if not create:
                return None
            row = conn.execute(
                "INSERT INTO destinations (name) VALUES (?) RETURNING id", (name,)
            ).fetchone()
        self._ids[name] = int(row[0])
        return self._ids[name]

    @staticmethod
    def _apply(conn: sqlite3.Connection, deltas: dict[int, _Delta]) -> None:
        for destination, delta in deltas.items():
            conn.execute(
                "UPDATE destinations SET pending = pending + ?, retrying = retrying + ?, "
                "delivered = delivered + ?, failed = failed + ?, "
                "last_error = coalesce(?, last_error), "
                "last_error_at = coalesce(?, last_error_at), "
                "last_success_at = coalesce(?, last_success_at) WHERE id = ?",
                (
                    delta.pending,
                    delta.retrying,
                    delta.delivered,
                    delta.failed,
                    delta.last_error,
                    delta.last_error_at,
                    delta.last_success_at,
                    destination,
                ),
            )

    # -- queueing with the events --------------------------------------------------------

    def enqueue(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[Row],
        routes: Sequence[Route | None],
        event_ids: Sequence[int | None],
    ) -> int:
        """Queue the jobs of the rows stored now (`event_ids[i]` None for a duplicate);
        returns how many stored rows were unroutable (route None)."""
        values: list[int] = []
        counts: dict[int, int] = {}
        unroutable = 0
        # Routes are few distinct tuples (routing shares them): their ids are looked up once.
        route_ids: dict[Route, list[int]] = {}
        for row, route, event_id in zip(rows, routes, event_ids, strict=True):
            if event_id is None:
                continue
            if route is None:
                unroutable += 1
                continue
            if not route:
                continue
            ids = route_ids.get(route)
            if ids is None:
                ids = route_ids[route] = [self._id(conn, name, create=True) or 0 for name in route]
            key = order_key(row.user_id, row.anonymous_id)
            for destination in ids:
                values += (destination, event_id, key)
                counts[destination] = counts.get(destination, 0) + 1
        deltas = {destination: _Delta(pending=n) for destination, n in counts.items()}
        per_statement = JOB_ROWS_PER_STATEMENT * 3
        for start in range(0, len(values), per_statement):
            part = values[start : start + per_statement]
            conn.execute(_insert_jobs_sql(len(part) // 3), part)
        self._apply(conn, deltas)
        return unroutable

    # -- claims --------------------------------------------------------------------------

    def claim(self, conn: sqlite3.Connection, name: str, limit: int, lease: float) -> list[Job]:
        """Hand out up to `limit` claimable jobs of `name` (see `Store.claim`), reading with
        `conn` (a connection of the caller's, used by one thread at a time)."""
        with self.lock:
            return self._claim(conn, name, limit, lease)

    def _claim(self, conn: sqlite3.Connection, name: str, limit: int, lease: float) -> list[Job]:
        destination = self._id(conn, name, create=False)
        if destination is None or limit <= 0:
            return []
        now = self._clock()
        monotonic = self._monotonic()
        leases = self._leases
        blocked: set[int] = set()
        chosen: list[tuple[int, int, int, float | None]] = []
        after = -1
        scanned = 0
        # Most of a healthy queue's head is claimable: read a little more than asked first.
        page_size = min(_MAX_SCAN_PAGE, limit + limit // 4 + 16)
        while len(chosen) < limit and scanned < MAX_CLAIM_SCAN:
            page = conn.execute(
                "SELECT event_id, order_key, attempts, not_before, first_attempt_at FROM jobs "
                "WHERE destination = ? AND event_id > ? ORDER BY event_id LIMIT ?",
                (destination, after, page_size),
            ).fetchall()
            page_size = _MAX_SCAN_PAGE
            if not page:
                break
            scanned += len(page)
            after = page[-1][0]
            for event_id, key, attempts, not_before, first_attempt_at in page:
                held = leases.get((destination, event_id))
                if (held is not None and held[1] > monotonic) or not_before > now:
                    if key:
                        blocked.add(key)
                    continue
                if key and key in blocked:
                    continue
                chosen.append((event_id, key, attempts, first_attempt_at))
                if len(chosen) == limit:
                    break
        if not chosen:
            return []
        # A LEFT JOIN ordered like `chosen` keeps the rows aligned with it: no lookups.
        found = conn.execute(
            "SELECT e.message_id, e.body FROM json_each(?) AS j "
            "LEFT JOIN events AS e ON e.id = j.value ORDER BY j.key",
            (orjson.dumps([c[0] for c in chosen]).decode(),),
        ).fetchall()
        claim = next(self._claims)
        held = (claim, monotonic + lease)
        jobs: list[Job] = []
        for (event_id, key, attempts, first_attempt_at), (message_id, body) in zip(
            chosen, found, strict=True
        ):
            if body is None:  # its event is gone (cleared under it); nothing to send
                continue
            leases[(destination, event_id)] = held
            jobs.append(
                Job(name, event_id, message_id, body, key, attempts, first_attempt_at, claim)
            )
        return jobs

    # -- settling ------------------------------------------------------------------------

    def settle(self, conn: sqlite3.Connection, settlements: Sequence[Settlement]) -> int:
        """Apply the settlements whose claim still holds its job, inside the caller's
        transaction. Takes `lock` if it does not hold it yet: `committed()` or `rolled_back()`
        must follow, once the transaction ended, and releases it. Returns how many."""
        self._lock()
        now = self._clock()
        stamp = _iso(now)
        deltas: dict[int, _Delta] = {}
        done: dict[int, list[int]] = {}
        #: (destination, status, attempts, error) -> event ids: most share all four.
        ended: dict[tuple[int, str, int, str | None], list[int]] = {}
        retried: list[tuple[Any, ...]] = []
        released: list[tuple[Any, ...]] = []
        applied = 0
        for settlement in settlements:
            job = settlement.job
            destination = self._ids.get(job.destination)
            if destination is None:
                continue
            key = (destination, job.id)
            held = self._leases.get(key)
            if held is None or held[0] != job.claim:
                continue
            applied += 1
            self._ending.append(key)
            outcome = settlement.outcome
            delta = deltas.setdefault(destination, _Delta())
            was_pending = job.attempts == 0
            if outcome is Outcome.RELEASED:
                released.append((settlement.retry_at or 0.0, destination, job.id))
                continue
            attempts = job.attempts + 1
            error = error_text(settlement.error)
            if outcome is Outcome.RETRY:
                retried.append(
                    (
                        attempts,
                        settlement.retry_at or now,
                        now if job.first_attempt_at is None else job.first_attempt_at,
                        error,
                        destination,
                        job.id,
                    )
                )
                if was_pending:
                    delta.pending -= 1
                    delta.retrying += 1
            else:
                failed = outcome is Outcome.FAILED
                done.setdefault(destination, []).append(job.id)
                ending = str(JobStatus.FAILED if failed else JobStatus.DELIVERED)
                group = (destination, ending, attempts, error if failed else None)
                ended.setdefault(group, []).append(job.id)
                if was_pending:
                    delta.pending -= 1
                else:
                    delta.retrying -= 1
                if failed:
                    delta.failed += 1
                else:
                    delta.delivered += 1
                    delta.last_success_at = stamp
            if outcome is not Outcome.DELIVERED and error is not None:
                delta.last_error, delta.last_error_at = error, stamp
        if released:
            conn.executemany(
                "UPDATE jobs SET not_before = ? WHERE destination = ? AND event_id = ?", released
            )
        if retried:
            conn.executemany(
                "UPDATE jobs SET attempts = ?, not_before = ?, first_attempt_at = ?, "
                "last_error = ? WHERE destination = ? AND event_id = ?",
                retried,
            )
        # One statement per destination (and outcome), over a JSON list of job ids: per-row
        # calls, or rows of several values, cost two to four times as much per job.
        for destination, event_ids in done.items():
            conn.execute(
                "DELETE FROM jobs WHERE destination = ? AND event_id IN "
                "(SELECT value FROM json_each(?))",
                (destination, orjson.dumps(event_ids).decode()),
            )
        for (destination, ending, attempts, error), event_ids in ended.items():
            conn.execute(
                "INSERT OR REPLACE INTO outcomes SELECT value, ?, ?, ?, ?, ? FROM json_each(?)",
                (destination, ending, attempts, error, stamp, orjson.dumps(event_ids).decode()),
            )
        self._apply(conn, deltas)
        return applied

    def committed(self) -> None:
        """The transaction with the last settlements committed: their claims end."""
        for key in self._ending:
            self._leases.pop(key, None)
        self._ending.clear()
        self._unlock()

    def rolled_back(self) -> None:
        """The transaction failed: the claims hold on (their lease still runs)."""
        self._ending.clear()
        self._unlock()

    def _lock(self) -> None:
        """Hold `lock` until `committed()` or `rolled_back()`, taking it unless held already."""
        if not self._locked:
            self.lock.acquire()
            self._locked = True

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self.lock.release()

    # -- replay and clear ----------------------------------------------------------------

    def replay_candidates(
        self,
        conn: sqlite3.Connection,
        name: str,
        after: int,
        *,
        failed_only: bool,
        since: str | None,
    ) -> list[tuple[int, int, str]]:
        """The next chunk of events above `after` that a replay of `name` considers, as
        `(event_id, order_key, body)`: its dead letters, or every stored event (see
        `Store.replay`). Reads only, on the caller's connection."""
        if failed_only:
            destination = self._id(conn, name, create=False)
            if destination is None:
                return []
            rows = conn.execute(
                "SELECT e.id, e.user_id, e.anonymous_id, e.body FROM outcomes AS o "
                "JOIN events AS e ON e.id = o.event_id WHERE o.destination = ? "
                "AND o.status = 'failed' AND o.event_id > ? "
                "AND (? IS NULL OR e.received_at >= ?) ORDER BY o.event_id LIMIT ?",
                (destination, after, since, since, REPLAY_CHUNK),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT id, user_id, anonymous_id, body FROM events WHERE id > ? "
                "AND (? IS NULL OR received_at >= ?) ORDER BY id LIMIT ?",
                (after, since, since, REPLAY_CHUNK),
            ).fetchall()
        return [
            (event_id, order_key(user, anonymous), body) for event_id, user, anonymous, body in rows
        ]

    def requeue(
        self, conn: sqlite3.Connection, name: str, chosen: Sequence[tuple[int, int]]
    ) -> int:
        """In one transaction on the writer: queue `(event_id, order_key)` for `name` unless
        queued already, moving dead letters among them back; returns how many were queued.

        Events deleted since they were chosen (by the retention, or a clear) are skipped: a
        job of an event that is gone would never be claimed, nor ever deleted."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            destination = self._id(conn, name, create=True)
            assert destination is not None
            ids = orjson.dumps([event_id for event_id, _ in chosen]).decode()
            stored = {
                event_id
                for (event_id,) in conn.execute(
                    "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))", (ids,)
                )
            }
            if len(stored) < len(chosen):
                chosen = [pair for pair in chosen if pair[0] in stored]
                ids = orjson.dumps([event_id for event_id, _ in chosen]).decode()
            live = {
                event_id
                for (event_id,) in conn.execute(
                    # IN, not a join: a join may walk the whole queue once per id.
                    "SELECT event_id FROM jobs WHERE destination = ? "
                    "AND event_id IN (SELECT value FROM json_each(?))",
                    (destination, ids),
                )
            }
            values: list[int] = []
            for event_id, key in chosen:
                if event_id not in live:
                    values += (destination, event_id, key)
            queued = len(values) // 3
            if queued:
                requeued = orjson.dumps(values[1::3]).decode()
                (was_failed,) = conn.execute(
                    "SELECT count(*) FROM outcomes WHERE destination = ? AND status = 'failed' "
                    "AND event_id IN (SELECT value FROM json_each(?))",
                    (destination, requeued),
                ).fetchone()
                conn.execute(
                    "DELETE FROM outcomes WHERE destination = ? AND status = 'failed' "
                    "AND event_id IN (SELECT value FROM json_each(?))",
                    (destination, requeued),
                )
                per_statement = JOB_ROWS_PER_STATEMENT * 3
                for start in range(0, len(values), per_statement):
                    part = values[start : start + per_statement]
                    conn.execute(_insert_jobs_sql(len(part) // 3), part)
                self._apply(conn, {destination: _Delta(pending=queued, failed=-was_failed)})
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return queued

    def drop_with_events(self, conn: sqlite3.Connection, event_ids: str, reason: str) -> int:
        """Inside the caller's transaction, which also deletes the events `event_ids` (a JSON
        list): their outcomes go, and their jobs still owed end failed with `reason`, counted
        per destination but leaving no outcome behind (there is no event left to show one
        for). Returns how many jobs ended so.

        Takes `lock` like `settle` (`committed()` or `rolled_back()` must follow): a claim sees
        the jobs either before or after, and the leases of jobs ended here end with the
        commit, so a router's late settlement of one changes nothing instead of counting it
        twice."""
        self._lock()
        stamp = _iso(self._clock())
        deltas: dict[int, _Delta] = {}
        ended = 0
        destinations = [row[0] for row in conn.execute("SELECT id FROM destinations")]
        for destination in destinations:
            # IN over the key's second column: one b-tree seek per event, not a queue scan.
            owed = conn.execute(
                "DELETE FROM jobs WHERE destination = ? AND event_id IN "
                "(SELECT value FROM json_each(?)) RETURNING event_id, attempts",
                (destination, event_ids),
            ).fetchall()
            if not owed:
                continue
            retrying = sum(1 for _, attempts in owed if attempts)
            deltas[destination] = _Delta(
                pending=-(len(owed) - retrying),
                retrying=-retrying,
                failed=len(owed),
                last_error=reason,
                last_error_at=stamp,
            )
            self._ending += [(destination, event_id) for event_id, _ in owed]
            ended += len(owed)
        conn.execute(
            "DELETE FROM outcomes WHERE event_id IN (SELECT value FROM json_each(?))",
            (event_ids,),
        )
        self._apply(conn, deltas)
        return ended

    def clear(self, conn: sqlite3.Connection) -> None:
        """Inside the caller's transaction: forget every job and outcome, zero the counts."""
        conn.execute("DELETE FROM jobs")
        conn.execute("DELETE FROM outcomes")
        conn.execute(
            "UPDATE destinations SET pending = 0, retrying = 0, delivered = 0, failed = 0, "
            "last_error = NULL, last_error_at = NULL, last_success_at = NULL"
        )
        self._leases.clear()


# -- reads (any thread, on a reader connection) --------------------------------------------


def destination_counts(conn: sqlite3.Connection) -> list[DestinationCounts]:
    """Every destination's counts, by name."""
    return [
        DestinationCounts(*row)
        for row in conn.execute(
            "SELECT name, pending, retrying, delivered, failed, last_error, last_error_at, "
            "last_success_at FROM destinations ORDER BY name"
        )
    ]


def deliveries(conn: sqlite3.Connection, event_id: int) -> list[EventDelivery]:
    """Where one stored event stands with each destination it was queued for."""
    states: dict[str, EventDelivery] = {}
    for name, status, attempts, error, at in conn.execute(
        "SELECT d.name, o.status, o.attempts, o.last_error, o.at FROM outcomes AS o "
        "JOIN destinations AS d ON d.id = o.destination WHERE o.event_id = ?",
        (event_id,),
    ):
        delivered = status == JobStatus.DELIVERED
        states[name] = EventDelivery(
            name, JobStatus(status), attempts, error, at if delivered else None
        )
    # A job still queued is the current state, even when an earlier one had ended.
    for name, attempts, error in conn.execute(
        "SELECT d.name, j.attempts, j.last_error FROM destinations AS d "
        "JOIN jobs AS j ON j.destination = d.id AND j.event_id = ?",
        (event_id,),
    ):
        status = JobStatus.RETRYING if attempts else JobStatus.PENDING
        states[name] = EventDelivery(name, status, attempts, error, None)
    return [states[name] for name in sorted(states)]
