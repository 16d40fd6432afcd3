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
- A claim reads a destination's jobs from a floor below which every job has ended, so its
  cost follows the queue, not the history (`job_claims.py`).
- Counts by state are appended deltas (`job_counts`), folded by maintenance.
- Dead letters are jobs whose newest status is `failed`, with their attempts and last error
  (cut to `store.jobs.MAX_ERROR_CHARS`). They are kept as long as their partition: `--retention`
  bounds them, each costing one status row. Jobs still owed when retention drops their
  partition are counted failed, with the reason as their destination's last error.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from trackline.collector.ingest import Row
from trackline.collector.store.jobs import (
    Job,
    Outcome,
    Route,
    Settlement,
    error_text,
    order_key,
)
from trackline.collector.store.postgres import job_reads, job_replay
from trackline.collector.store.postgres.job_claims import Claims
from trackline.collector.store.postgres.job_rows import (
    CLAIMED,
    DELIVERED,
    FAILED,
    JOBS_LOCK_SPACE,
    LATEST,
    RELEASED,
    RETRY,
    Delta,
    Destinations,
    append_counts,
    append_statuses,
)
from trackline.collector.store.postgres.schema import SCHEMA


class PostgresJobs:
    """The job side of one PostgreSQL store. `enqueue` runs inside the writer's transaction;
    the rest take a connection of their own (autocommit) from the caller."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.destinations = Destinations()
        self._claims = Claims(self.destinations, clock)
        self.destination_counts = job_reads.destination_counts
        self.deliveries = job_reads.deliveries
        self.replay_chunk = functools.partial(
            job_replay.replay_chunk, destinations=self.destinations
        )

    def ids(self, conn: psycopg.Connection[Any], names: Iterable[str], create: bool) -> None:
        """See `Destinations.ids`."""
        self.destinations.ids(conn, names, create)

    def forget(self) -> None:
        """After a clear (see `Claims.forget`)."""
        self._claims.forget()

    def claim(
        self, conn: psycopg.Connection[Any], name: str, limit: int, lease: float
    ) -> list[Job]:
        """See `Claims.claim`."""
        return self._claims.claim(conn, name, limit, lease)

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
        deltas: dict[int, Delta] = collections.defaultdict(Delta)
        jobs: list[tuple[int, int, int, int]] = []
        unroutable = 0
        known = self.destinations.known()
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
            append_counts(cur.connection, deltas)
        return unroutable

    def settle(self, conn: psycopg.Connection[Any], settlements: Sequence[Settlement]) -> int:
        """End the claims that still hold their jobs, in one transaction; returns how many."""
        self.destinations.ids(conn, {s.job.destination for s in settlements}, create=False)
        known = [(self.destinations.id_of(s.job.destination), s) for s in settlements]
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
            deltas: dict[int, Delta] = collections.defaultdict(Delta)
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
                append_statuses(cur, statuses)
                append_counts(conn, deltas)
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
        error = error_text(settlement.error)
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
    def _count(delta: Delta, settlement: Settlement) -> None:
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
        error = error_text(settlement.error)
        if outcome is not Outcome.DELIVERED and error is not None:
            delta.last_error = error
