"""Delivery jobs in the PostgreSQL store, shared by every collector process on the database.

The rules are `trackline.collector.store.jobs`'s (every engine keeps them); this is how they
hold with many processes and for months:

- A job is a row of `jobs` that never changes; its state is its newest row in `job_status`
  (pending while it has none). Claiming, retrying, releasing, delivering, failing and
  replaying each append a status row carrying the job's whole state (attempts, first attempt,
  when it may go again, last error, the claim holding it and until when). Nothing is updated
  in place or deleted row by row: both tables are partitioned like the events, and a
  partition is dropped whole with its events (rudder-server's jobs and job_status tables).
- Claims and settlements of one destination take turns (an advisory lock per destination,
  for the length of one short transaction), so a job is handed to one claim at a time, and a
  settlement checks that its claim still holds the job against committed state. A claim's
  lease is a time in the database's clock: a process that dies holding jobs gives them back
  when the lease runs out, to whichever process claims next.
- A claim reads a destination's jobs from a floor: below it, every job has ended. Each
  process keeps its own floor per destination (a floor too low only costs reading). Because a
  transaction may commit jobs with lower ids after higher ones became visible, a floor found
  by one read is trusted only once every transaction that was running during that read has
  ended (PostgreSQL's snapshot says which: `xmax` then, `xmin` now); until then the older
  floor stands. So a committed job is never left behind a floor.
- Counts by state are appended deltas (`job_counts`), folded by maintenance.
- Dead letters are jobs whose newest status is `failed`, with their attempts and last error
  (cut to `MAX_ERROR_CHARS`). They are kept as long as their partition: `--retention`
  bounds them, each costing one status row. Jobs still owed when retention drops their
  partition are counted failed, with the reason as their destination's last error.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import psycopg

from trackline.collector.ingest import Row
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    JobStatus,
    Outcome,
    Route,
    Settlement,
    order_key,
)
from trackline.collector.store.postgres.schema import BLOCK, LOCK_SPACE, ROTATE_LOCK, SCHEMA

logger = logging.getLogger(__name__)

#: First key of the advisory locks that make one destination's claims and settlements take
#: turns (the second key is the destination's id).
JOBS_LOCK_SPACE: Final = LOCK_SPACE + 1
#: Job rows one claim reads at most looking for claimable jobs (as the SQLite engine).
MAX_CLAIM_SCAN: Final = 50_000
_MAX_SCAN_PAGE: Final = 5000
#: Events one replay transaction handles.
REPLAY_CHUNK: Final = 5000
#: Longest error text kept per job.
MAX_ERROR_CHARS: Final = 500

#: A status row's state; `claimed` is held until its lease ends; the rest as `JobStatus`.
CLAIMED: Final = "claimed"
RELEASED: Final = "released"
RETRY: Final = "retry"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
#: A dead letter queued again as a new job: ended, counted nowhere.
REPLAYED: Final = "replayed"
ENDED: Final = frozenset({DELIVERED, FAILED, REPLAYED})

_STATUS_COLUMNS: Final = (
    "destination, job_id, state, attempts, not_before, first_attempt_at, error, claim, lease_until"
)
_STATUS_TYPES: Final = [
    "int4",
    "int8",
    "text",
    "int4",
    "float8",
    "float8",
    "text",
    "int8",
    "timestamptz",
]
#: A job's newest status, for `jobs AS j`.
LATEST: Final = f"""LEFT JOIN LATERAL (
    SELECT state, attempts, not_before, first_attempt_at, error, claim, lease_until
    FROM {SCHEMA}.job_status AS s WHERE s.destination = j.destination AND s.job_id = j.id
    ORDER BY s.seq DESC LIMIT 1
) AS st ON true"""
_ISO: Final = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def _error_text(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR_CHARS]


@dataclasses.dataclass(slots=True)
class _Delta:
    """Changes to one destination's counts within one transaction."""

    pending: int = 0
    retrying: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    failed_now: bool = False
    succeeded_now: bool = False


@dataclasses.dataclass(slots=True)
class _Floor:
    """A destination's floor in this process: `trusted`, and found ones awaiting trust as
    (floor, the snapshot's xmax when it was found)."""

    trusted: int = 0
    waiting: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def trust(self, xmin: int) -> None:
        still = []
        for floor, xmax in self.waiting:
            if xmax <= xmin:
                self.trusted = max(self.trusted, floor)
            else:
                still.append((floor, xmax))
        self.waiting = still

    def found(self, floor: int, xmax: int) -> None:
        if floor > self.trusted and (not self.waiting or floor > self.waiting[-1][0]):
            self.waiting.append((floor, xmax))


def _append_counts(conn: psycopg.Connection[Any], deltas: dict[int, _Delta]) -> None:
    rows = [
        (
            destination,
            d.pending,
            d.retrying,
            d.delivered,
            d.failed,
            d.last_error,
            d.last_error is not None,
            d.succeeded_now,
        )
        for destination, d in deltas.items()
        if d.pending or d.retrying or d.delivered or d.failed or d.last_error or d.succeeded_now
    ]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {SCHEMA}.job_counts (destination, pending, retrying, delivered, "
            "failed, last_error, last_error_at, last_success_at) VALUES (%s, %s, %s, %s, %s, %s, "
            "CASE WHEN %s THEN clock_timestamp() END, CASE WHEN %s THEN clock_timestamp() END)",
            rows,
        )


def _append_statuses(cur: psycopg.Cursor[Any], rows: Iterable[tuple[Any, ...]]) -> None:
    with cur.copy(
        f"COPY {SCHEMA}.job_status ({_STATUS_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_STATUS_TYPES)
        for row in rows:
            copy.write_row(row)


class PostgresJobs:
    """The job side of one PostgreSQL store. `enqueue` runs inside the writer's transaction;
    the rest take a connection of their own (autocommit) from the caller."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._floors: dict[int, _Floor] = {}
        self._lock = threading.Lock()

    # -- destinations ----------------------------------------------------------------------

    def ids(self, conn: psycopg.Connection[Any], names: Iterable[str], create: bool) -> None:
        """Learn the ids of `names` (making those missing when `create`), outside of any
        transaction of the caller's: a new destination is committed at once."""
        with self._lock:
            missing = sorted(set(names) - self._ids.keys())
        if not missing:
            return
        if create:
            conn.execute(
                f"INSERT INTO {SCHEMA}.destinations (name) SELECT unnest(%s::text[]) "
                "ON CONFLICT (name) DO NOTHING",
                (missing,),
            )
        found = conn.execute(
            f"SELECT id, name FROM {SCHEMA}.destinations WHERE name = ANY(%s)", (missing,)
        ).fetchall()
        with self._lock:
            for destination, name in found:
                self._ids[name] = destination
                self._names[destination] = name

    def id_of(self, name: str) -> int | None:
        with self._lock:
            return self._ids.get(name)

    def forget(self) -> None:
        """After a clear: floors start over (ids are never reused, so they only cost reads)."""
        with self._lock:
            self._floors.clear()

    # -- queueing with the events ----------------------------------------------------------

    def enqueue(
        self,
        cur: psycopg.Cursor[Any],
        rows: Sequence[Row],
        routes: Sequence[Route | None],
        ids: Sequence[int],
        stored: Iterable[int],
    ) -> int:
        """Inside the writer's transaction: one job per destination named by the route of each
        stored row (positions `stored`; `ids[i]` the event id of row i); returns how many
        stored rows were unroutable. The destinations' ids must be known (`ids()`)."""
        deltas: dict[int, _Delta] = collections.defaultdict(_Delta)
        jobs: list[tuple[int, int, int, int]] = []
        unroutable = 0
        with self._lock:
            known = dict(self._ids)
        for index in sorted(stored):
            route = routes[index]
            if route is None:
                unroutable += 1
                continue
            if not route:
                continue
            row = rows[index]
            key = order_key(row.user_id, row.anonymous_id)
            for name in route:
                destination = known[name]
                jobs.append((destination, ids[index], ids[index], key))
                deltas[destination].pending += 1
        if jobs:
            with cur.copy(
                f"COPY {SCHEMA}.jobs (destination, id, event_id, order_key) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "int8", "int8", "int8"])
                for job in jobs:
                    copy.write_row(job)
            _append_counts(cur.connection, deltas)
        return unroutable

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self, conn: psycopg.Connection[Any], name: str, limit: int, lease: float
    ) -> list[Job]:
        """Up to `limit` claimable jobs of `name` (see `Store.claim`), in one transaction."""
        self.ids(conn, [name], create=False)
        destination = self.id_of(name)
        if destination is None or limit <= 0:
            return []
        with self._lock:
            floor = self._floors.setdefault(destination, _Floor())
        now = self._clock()
        with conn.transaction(), conn.cursor() as cur:
            row = cur.execute(
                "SELECT pg_advisory_xact_lock(%s, %s), nextval(%s)",
                (JOBS_LOCK_SPACE, destination, f"{SCHEMA}.claims"),
            ).fetchone()
            assert row is not None
            claim = int(row[1])
            chosen = self._scan(conn, destination, floor, limit, now)
            if not chosen:
                return []
            bodies = {
                event_id: (message_id, body)
                for event_id, message_id, body in cur.execute(
                    "SELECT e.id, e.message_id, e.body FROM unnest(%s::bigint[]) AS c(id) "
                    f"JOIN {SCHEMA}.events AS e ON e.id = c.id",
                    (sorted({c[1] for c in chosen}),),
                ).fetchall()
            }
            held = [c for c in chosen if c[1] in bodies]
            gone = [c for c in chosen if c[1] not in bodies]
            row = cur.execute(
                "SELECT clock_timestamp() + make_interval(secs => %s)", (lease,)
            ).fetchone()
            assert row is not None
            until = row[0]
            statuses: list[tuple[Any, ...]] = [
                (destination, job_id, CLAIMED, attempts, not_before, first, error, claim, until)
                for job_id, _, _, attempts, not_before, first, error in held
            ]
            if gone:
                # Its event was dropped (retention) after the job was queued: nothing to send,
                # so it ends as a dead letter saying why, rather than waiting forever.
                why = "the event is no longer stored (dropped by retention)"
                statuses += [
                    (destination, job_id, FAILED, attempts, 0.0, first, why, None, None)
                    for job_id, _, _, attempts, _, first, _ in gone
                ]
                delta = _Delta(failed=len(gone), last_error=why)
                for _, _, _, attempts, _, _, _ in gone:
                    if attempts:
                        delta.retrying -= 1
                    else:
                        delta.pending -= 1
                _append_counts(conn, {destination: delta})
            _append_statuses(cur, statuses)
        return [
            Job(name, job_id, bodies[event_id][0], bodies[event_id][1], key, attempts, first, claim)
            for job_id, event_id, key, attempts, _, first, _ in held
        ]

    def _scan(
        self, conn: psycopg.Connection[Any], destination: int, floor: _Floor, limit: int, now: float
    ) -> list[tuple[int, int, int, int, float, float | None, str | None]]:
        """The claimable jobs from the floor up, in id order, and the floor moved on."""
        blocked: set[int] = set()
        chosen: list[tuple[int, int, int, int, float, float | None, str | None]] = []
        after = -1
        scanned = 0
        page_size = min(_MAX_SCAN_PAGE, limit + limit // 4 + 16)
        first_live: int | None = None
        last_seen: int | None = None
        xmax = 0
        while len(chosen) < limit and scanned < MAX_CLAIM_SCAN:
            page = conn.execute(
                "SELECT j.id, j.event_id, j.order_key, st.state, coalesce(st.attempts, 0), "
                "coalesce(st.not_before, 0), st.first_attempt_at, st.error, "
                "coalesce(st.state = 'claimed' AND st.lease_until > clock_timestamp(), false), "
                "pg_snapshot_xmin(pg_current_snapshot())::text, "
                "pg_snapshot_xmax(pg_current_snapshot())::text "
                f"FROM {SCHEMA}.jobs AS j {LATEST} "
                "WHERE j.destination = %s AND j.id >= %s AND j.id > %s "
                "ORDER BY j.id LIMIT %s",
                (destination, floor.trusted, after, page_size),
            ).fetchall()
            page_size = _MAX_SCAN_PAGE
            if not page:
                break
            if after < 0:
                xmin, xmax = int(page[0][9]), int(page[0][10])
                floor.trust(xmin)
            scanned += len(page)
            after = last_seen = page[-1][0]
            for job_id, event_id, key, state, attempts, not_before, first, error, held, *_ in page:
                if state in ENDED:
                    continue
                if first_live is None:
                    first_live = job_id
                if held or not_before > now:
                    if key:
                        blocked.add(key)
                    continue
                if key and key in blocked:
                    continue
                chosen.append((job_id, event_id, key, attempts, not_before, first, error))
                if len(chosen) == limit:
                    break
        if first_live is not None:
            floor.found(first_live, xmax)
        elif last_seen is not None:
            floor.found(last_seen + 1, xmax)
        return chosen

    # -- settling --------------------------------------------------------------------------

    def settle(self, conn: psycopg.Connection[Any], settlements: Sequence[Settlement]) -> int:
        """End the claims that still hold their jobs, in one transaction; returns how many."""
        self.ids(conn, {s.job.destination for s in settlements}, create=False)
        known = [(self.id_of(s.job.destination), s) for s in settlements]
        mine = [(destination, s) for destination, s in known if destination is not None]
        if not mine:
            return 0
        now = self._clock()
        with conn.transaction(), conn.cursor() as cur:
            for destination in sorted({d for d, _ in mine}):
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (JOBS_LOCK_SPACE, destination))
            current = {
                (destination, job_id): (state, claim, error)
                for destination, job_id, state, claim, error in cur.execute(
                    "SELECT j.destination, j.id, st.state, st.claim, st.error "
                    "FROM unnest(%s::int[], %s::bigint[]) AS j(destination, id) "
                    f"{LATEST}",
                    ([d for d, _ in mine], [s.job.id for _, s in mine]),
                ).fetchall()
            }
            statuses: list[tuple[Any, ...]] = []
            deltas: dict[int, _Delta] = collections.defaultdict(_Delta)
            applied = 0
            for destination, settlement in mine:
                job = settlement.job
                state, claim, last_error = current.get((destination, job.id), (None, None, None))
                if state != CLAIMED or claim != job.claim:
                    continue
                current[(destination, job.id)] = ("settled", None, None)  # once per batch
                applied += 1
                statuses.append(self._status(destination, settlement, last_error, now))
                self._count(deltas[destination], settlement)
            if statuses:
                _append_statuses(cur, statuses)
                _append_counts(conn, deltas)
        return applied

    @staticmethod
    def _status(
        destination: int, settlement: Settlement, last_error: str | None, now: float
    ) -> tuple[Any, ...]:
        job = settlement.job
        outcome = settlement.outcome
        if outcome is Outcome.RELEASED:
            return (
                destination,
                job.id,
                RELEASED,
                job.attempts,
                settlement.retry_at or 0.0,
                job.first_attempt_at,
                last_error,
                None,
                None,
            )
        attempts = job.attempts + 1
        error = _error_text(settlement.error)
        first = now if job.first_attempt_at is None else job.first_attempt_at
        if outcome is Outcome.RETRY:
            return (
                destination,
                job.id,
                RETRY,
                attempts,
                settlement.retry_at or now,
                first,
                error,
                None,
                None,
            )
        state = DELIVERED if outcome is Outcome.DELIVERED else FAILED
        kept = error if outcome is Outcome.FAILED else None
        return (destination, job.id, state, attempts, 0.0, first, kept, None, None)

    @staticmethod
    def _count(delta: _Delta, settlement: Settlement) -> None:
        outcome = settlement.outcome
        if outcome is Outcome.RELEASED:
            return
        was_pending = settlement.job.attempts == 0
        if outcome is Outcome.RETRY:
            if was_pending:
                delta.pending -= 1
                delta.retrying += 1
        else:
            if was_pending:
                delta.pending -= 1
            else:
                delta.retrying -= 1
            if outcome is Outcome.FAILED:
                delta.failed += 1
            else:
                delta.delivered += 1
                delta.succeeded_now = True
        error = _error_text(settlement.error)
        if outcome is not Outcome.DELIVERED and error is not None:
            delta.last_error = error

    # -- replay ----------------------------------------------------------------------------

    def replay_chunk(
        self,
        conn: psycopg.Connection[Any],
        name: str,
        after: int,
        *,
        failed_only: bool,
        since: str | None,
        selects: Callable[[str], bool] | None,
    ) -> tuple[int, int | None]:
        """One transaction of `Store.replay`: the events after event id `after`, a chunk of
        them, each getting a new job (a fresh id block, so it is claimed after what is queued
        now); a dead letter among them is marked replayed. Returns how many were queued and
        where the next chunk starts (None when done)."""
        self.ids(conn, [name], create=True)
        destination = self.id_of(name)
        assert destination is not None
        with conn.transaction():
            # Writers of jobs hold this lock shared and take a transaction id before ids:
            # claims' floors rely on it (see the module docstring).
            conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, %s), pg_current_xact_id()",
                (LOCK_SPACE, ROTATE_LOCK),
            )
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (JOBS_LOCK_SPACE, destination))
            candidates = self._candidates(conn, destination, after, failed_only, since)
            if not candidates:
                return 0, None
            queued = self._requeue(conn, destination, candidates, selects, failed_only)
        return queued, int(candidates[-1][0])

    @staticmethod
    def _candidates(
        conn: psycopg.Connection[Any],
        destination: int,
        after: int,
        failed_only: bool,
        since: str | None,
    ) -> list[tuple[Any, ...]]:
        """(event id, user id, anonymous id, body, newest job id, its state) of the next events
        to consider, in event order."""
        newest_job = f"""LEFT JOIN LATERAL (
            SELECT j.id, j.destination FROM {SCHEMA}.jobs AS j
            WHERE j.event_id = e.id AND j.destination = %s ORDER BY j.id DESC LIMIT 1
        ) AS j ON true {LATEST}"""
        if failed_only:
            return conn.execute(
                "SELECT e.id, e.user_id, e.anonymous_id, e.body, j.id, st.state "
                f"FROM (SELECT DISTINCT f.job_id FROM {SCHEMA}.job_status AS f "
                "WHERE f.destination = %s AND f.state = 'failed') AS dead "
                f"JOIN {SCHEMA}.jobs AS dj ON dj.destination = %s AND dj.id = dead.job_id "
                f"JOIN {SCHEMA}.events AS e ON e.id = dj.event_id {newest_job} "
                "WHERE e.id > %s AND st.state = 'failed' "
                "AND (%s::text IS NULL OR e.received_at >= %s) ORDER BY e.id LIMIT %s",
                (destination, destination, destination, after, since, since, REPLAY_CHUNK),
            ).fetchall()
        return conn.execute(
            "SELECT e.id, e.user_id, e.anonymous_id, e.body, j.id, st.state "
            f"FROM {SCHEMA}.events AS e {newest_job} "
            "WHERE e.id > %s AND (%s::text IS NULL OR e.received_at >= %s) "
            "ORDER BY e.id LIMIT %s",
            (destination, after, since, since, REPLAY_CHUNK),
        ).fetchall()

    @staticmethod
    def _requeue(
        conn: psycopg.Connection[Any],
        destination: int,
        candidates: Sequence[tuple[Any, ...]],
        selects: Callable[[str], bool] | None,
        failed_only: bool,
    ) -> int:
        chosen = []
        for event_id, user_id, anonymous_id, body, job_id, state in candidates:
            if job_id is not None and state not in ENDED:
                continue  # queued for the destination now
            if not failed_only and selects is not None and not selects(body):
                continue
            chosen.append((event_id, order_key(user_id, anonymous_id), job_id, state))
        if not chosen:
            return 0
        blocks = -(-len(chosen) // BLOCK)
        row = conn.execute(
            f"SELECT ARRAY(SELECT nextval('{SCHEMA}.event_blocks') FROM generate_series(1, %s))",
            (blocks,),
        ).fetchone()
        assert row is not None
        starts: list[int] = row[0]
        was_failed = [(destination, job_id) for _, _, job_id, state in chosen if state == FAILED]
        with conn.cursor() as cur:
            with cur.copy(
                f"COPY {SCHEMA}.jobs (destination, id, event_id, order_key) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "int8", "int8", "int8"])
                for index, (event_id, key, _, _) in enumerate(chosen):
                    new_id = starts[index // BLOCK] + index % BLOCK
                    copy.write_row((destination, new_id, event_id, key))
            if was_failed:
                _append_statuses(
                    cur,
                    (
                        (d, job_id, REPLAYED, 0, 0.0, None, None, None, None)
                        for d, job_id in was_failed
                    ),
                )
        _append_counts(conn, {destination: _Delta(pending=len(chosen), failed=-len(was_failed))})
        return len(chosen)

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def destination_counts(conn: psycopg.Connection[Any]) -> list[DestinationCounts]:
        """Every destination's counts, by name (one statement, one snapshot)."""
        rows = conn.execute(
            "SELECT d.name, coalesce(sum(c.pending), 0), coalesce(sum(c.retrying), 0), "
            "coalesce(sum(c.delivered), 0), coalesce(sum(c.failed), 0), "
            "(array_agg(c.last_error ORDER BY c.last_error_at DESC NULLS LAST))[1], "
            f"{_ISO.format('max(c.last_error_at)')}, {_ISO.format('max(c.last_success_at)')} "
            f"FROM {SCHEMA}.destinations AS d LEFT JOIN {SCHEMA}.job_counts AS c "
            "ON c.destination = d.id GROUP BY d.name ORDER BY d.name"
        ).fetchall()
        return [
            DestinationCounts(
                name,
                int(pending),
                int(retrying),
                int(delivered),
                int(failed),
                error,
                error_at,
                ok_at,
            )
            for name, pending, retrying, delivered, failed, error, error_at, ok_at in rows
        ]

    @staticmethod
    def deliveries(conn: psycopg.Connection[Any], message_id: str) -> list[EventDelivery] | None:
        """Where one event stands with each destination it was queued for: its newest job's
        newest status per destination."""
        rows = conn.execute(
            "SELECT e.id, d.name, st.state, coalesce(st.attempts, 0), st.error, "
            f"{_ISO.format('st.at')} "
            f"FROM (SELECT id FROM {SCHEMA}.events WHERE message_id = %s "
            "ORDER BY id DESC LIMIT 1) AS e "
            "LEFT JOIN LATERAL (SELECT DISTINCT ON (destination) destination, id "
            f"FROM {SCHEMA}.jobs WHERE event_id = e.id ORDER BY destination, id DESC) AS j "
            f"ON true LEFT JOIN {SCHEMA}.destinations AS d ON d.id = j.destination "
            f"LEFT JOIN LATERAL (SELECT state, attempts, error, at FROM {SCHEMA}.job_status AS s "
            "WHERE s.destination = j.destination AND s.job_id = j.id ORDER BY s.seq DESC LIMIT 1"
            ") AS st ON true",
            (message_id,),
        ).fetchall()
        if not rows:
            return None
        found = []
        for _, name, state, attempts, error, at in rows:
            if name is None:
                continue  # the event has no job
            status = _status_of(state, attempts)
            delivered = status is JobStatus.DELIVERED
            found.append(EventDelivery(name, status, attempts, error, at if delivered else None))
        return sorted(found, key=lambda delivery: delivery.destination)


def _status_of(state: str | None, attempts: int) -> JobStatus:
    if state == DELIVERED:
        return JobStatus.DELIVERED
    if state == FAILED:
        return JobStatus.FAILED
    return JobStatus.RETRYING if attempts else JobStatus.PENDING
