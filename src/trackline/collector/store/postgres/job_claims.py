"""Claims of delivery jobs on PostgreSQL: handing a destination's due jobs to one claim at a
time, under a lease in the database's clock, in stored order with one user's jobs in order.

A claim reads a destination's jobs from a floor: below it, every job has ended. Each process
keeps its own floor per destination (a floor too low only costs reading). A transaction may
commit jobs with lower ids after higher ones became visible (ids are taken before commit), so
a floor found by one read is trusted only once every transaction that was running during
that read has ended: PostgreSQL's snapshot of the read says which (its `xmax`), a later
snapshot's `xmin` says when. Until then the older floor stands, and a committed job is never
left behind a floor. Writers take their transaction id before their job ids for this.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg

from trackline.collector.store.jobs import Job
from trackline.collector.store.postgres.job_rows import (
    CLAIMED,
    ENDED,
    FAILED,
    JOBS_LOCK_SPACE,
    LATEST,
    Delta,
    Destinations,
    append_counts,
    append_statuses,
)
from trackline.collector.store.postgres.schema import SCHEMA

#: Job rows one claim reads at most looking for claimable jobs (as the SQLite engine).
MAX_CLAIM_SCAN: Final = 50_000
_MAX_SCAN_PAGE: Final = 5000


@dataclasses.dataclass(slots=True)
class Floor:
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


class Claims:
    """The claims of one process; `claim` from any thread (one connection each)."""

    def __init__(self, destinations: Destinations, clock: Callable[[], float] = time.time) -> None:
        self._destinations = destinations
        self._clock = clock
        self._floors: dict[int, Floor] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """After a clear: floors start over (ids are never reused, so they only cost reads)."""
        with self._lock:
            self._floors.clear()

    def claim(
        self, conn: psycopg.Connection[Any], name: str, limit: int, lease: float
    ) -> list[Job]:
        """Up to `limit` claimable jobs of `name` (see `Store.claim`), in one transaction."""
        self._destinations.ids(conn, [name], create=False)
        destination = self._destinations.id_of(name)
        if destination is None or limit <= 0:
            return []
        with self._lock:
            floor = self._floors.setdefault(destination, Floor())
        now = self._clock()
        with conn.transaction(), conn.cursor() as cur:
            # The queue's pages must come from its index in order, stopping at the limit: with
            # fresh partitions' statistics the planner would rather sort the whole queue.
            row = cur.execute(
                "SELECT pg_advisory_xact_lock(%s, %s), nextval(%s), "
                "set_config('enable_sort', 'off', true), "
                "set_config('enable_bitmapscan', 'off', true), "
                "set_config('plan_cache_mode', 'force_custom_plan', true)",
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
                delta = Delta(failed=len(gone), last_error=why)
                for _, _, _, attempts, _, _, _ in gone:
                    if attempts:
                        delta.retrying -= 1
                    else:
                        delta.pending -= 1
                append_counts(conn, {destination: delta})
            append_statuses(cur, statuses)
        return [
            Job(name, job_id, bodies[event_id][0], bodies[event_id][1], key, attempts, first, claim)
            for job_id, event_id, key, attempts, _, first, _ in held
        ]

    def _scan(
        self, conn: psycopg.Connection[Any], destination: int, floor: Floor, limit: int, now: float
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
                "WITH snap AS MATERIALIZED (SELECT pg_snapshot_xmin(s)::text AS xmin, "
                "pg_snapshot_xmax(s)::text AS xmax FROM pg_current_snapshot() AS s) "
                "SELECT j.id, j.event_id, j.order_key, st.state, coalesce(st.attempts, 0), "
                "coalesce(st.not_before, 0), st.first_attempt_at, st.error, "
                "coalesce(st.state = 'claimed' AND st.lease_until > clock_timestamp(), false), "
                f"snap.xmin, snap.xmax FROM snap, {SCHEMA}.jobs AS j {LATEST} "
                "WHERE j.destination = %s AND j.id >= %s AND j.id > %s "
                "ORDER BY j.id LIMIT %s",
                (destination, floor.trusted, after, page_size),
            ).fetchall()
            if not page:
                break
            if after < 0:
                xmin, xmax = int(page[0][9]), int(page[0][10])
                floor.trust(xmin)
            scanned += len(page)
            after = last_seen = page[-1][0]
            before = len(chosen)
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
            # Read about what is still wanted next; twice as much after a page of nothing.
            wanted = limit - len(chosen)
            grown = page_size * 2 if len(chosen) == before else 0
            page_size = min(_MAX_SCAN_PAGE, max(wanted + wanted // 4 + 16, grown))
        if first_live is not None:
            floor.found(first_live, xmax)
        elif last_seen is not None:
            floor.found(last_seen + 1, xmax)
        return chosen
