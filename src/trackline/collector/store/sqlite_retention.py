"""Retention in the SQLite store: events received longer ago than the retention are deleted,
with their delivery outcomes and the jobs still owed for them, a chunk per transaction.

SQLite has one writer, so the deletion runs on the store's writer thread, one chunk between
two group commits: a request waits behind one chunk at most, never behind a whole pass, and a
pass still moves on under sustained load. A pass starts when the store opens, then a `period`
after the last one ended, or when asked (`SQLiteStore.expire`); it ends with the first chunk
short of full.

What a deletion leaves is what dropping a partition leaves on PostgreSQL: `/api/stats` counts
only the events still stored (their per-type and per-source counts go down; duplicates,
rejected and unroutable totals are history and stay); a destination's delivered and failed
counts stay, and each job still owed is counted failed with `DROPPED_REASON`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import orjson

from trackline.collector.store.sqlite_jobs import SQLiteJobs
from trackline.wire import format_timestamp

logger = logging.getLogger(__name__)

#: Why a job ends failed when its event goes before it was delivered (PostgreSQL's words).
DROPPED_REASON: Final = "dropped with its event by the retention before delivery"
#: Events deleted per transaction at most: what a waiting request may queue behind.
CHUNK_ROWS: Final = 1000
#: Seconds from the end of one pass to the start of the next.
PERIOD_SECONDS: Final = 60.0

#: The oldest events first, found by the arrival-time index (which also holds the row id).
_OLDEST: Final = """
SELECT id, type, source FROM events INDEXED BY events_received_at
WHERE received_at < ? ORDER BY received_at, id LIMIT ?
"""
_UNCOUNT: Final = "UPDATE event_counts SET n = n - ? WHERE type = ? AND source = ?"


def drop_chunk(conn: sqlite3.Connection, jobs: SQLiteJobs, cutoff: str, limit: int) -> int:
    """In one transaction on the writer's `conn`: delete up to `limit` of the oldest events
    received before `cutoff` (stored timestamp form), their outcomes and jobs, and take them
    off the counts. Returns how many events went. The caller ends the jobs' side
    (`jobs.committed()` after, `jobs.rolled_back()` on an error) and rolls back on an error."""
    conn.execute("BEGIN IMMEDIATE")
    found = conn.execute(_OLDEST, (cutoff, limit)).fetchall()
    if not found:
        conn.execute("COMMIT")
        return 0
    ids = orjson.dumps([row[0] for row in found]).decode()
    jobs.drop_with_events(conn, ids, DROPPED_REASON)
    counts: dict[tuple[str, str], int] = {}
    for _, kind, source in found:
        counts[(kind, source)] = counts.get((kind, source), 0) + 1
    conn.executemany(_UNCOUNT, [(n, kind, source) for (kind, source), n in counts.items()])
    # Gone like a dropped partition's counts: a type with no event left is no longer listed.
    conn.execute("DELETE FROM event_counts WHERE n <= 0")
    conn.execute("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    conn.execute("COMMIT")
    return len(found)


class Retention:
    """When the writer deletes a chunk, and which events (`seconds` old or older): the state
    of the pass underway and the callers waiting for one. Used by the writer thread only
    (`request` arrives there as a queued call)."""

    def __init__(
        self,
        seconds: float,
        *,
        chunk_rows: int = CHUNK_ROWS,
        period: float = PERIOD_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"retention must be a positive number of seconds, not {seconds}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"period must be a positive number of seconds, not {period}")
        self.seconds = seconds
        self.chunk_rows = chunk_rows
        self.period = period
        self._clock = clock
        self._monotonic = monotonic
        #: The pass underway deletes events received before this; None between passes.
        self._cutoff: str | None = None
        self._dropped = 0
        self._began = 0.0
        #: The first pass runs as soon as the store is open.
        self._next_at = monotonic()
        self._waiting: list[concurrent.futures.Future[int]] = []

    def due(self) -> bool:
        """Whether the writer should delete a chunk now."""
        return self._cutoff is not None or self._monotonic() >= self._next_at

    def wait_seconds(self) -> float:
        """How long the writer may wait for a request before the next chunk is due."""
        if self._cutoff is not None:
            return 0.0
        return max(0.0, self._next_at - self._monotonic())

    def request(self, future: concurrent.futures.Future[int]) -> None:
        """Run a pass now (or let the one underway finish); `future` gets how many events the
        pass deleted."""
        self._waiting.append(future)
        if self._cutoff is None:
            self._next_at = -math.inf

    def step(self, conn: sqlite3.Connection, jobs: SQLiteJobs) -> None:
        """Delete one chunk (starting a pass if none is underway); raises what SQLite raised,
        after which the caller rolls back and calls `failed`."""
        if self._cutoff is None:
            moment = datetime.fromtimestamp(self._clock() - self.seconds, UTC)
            self._cutoff = format_timestamp(moment)
            self._dropped = 0
            self._began = self._monotonic()
        dropped = drop_chunk(conn, jobs, self._cutoff, self.chunk_rows)
        jobs.committed()
        self._dropped += dropped
        if dropped < self.chunk_rows:
            if self._dropped:
                logger.info(
                    "retention: %d events older than the retention deleted in %.1f s",
                    self._dropped,
                    self._monotonic() - self._began,
                )
            self._finish(result=self._dropped)

    def failed(self, exc: Exception) -> None:
        """A chunk could not be deleted: the pass ends, and the next one starts a period
        later (the events stay until then; nothing was half deleted)."""
        logger.warning("retention pass stopped (tried again in %.0f s): %s", self.period, exc)
        self._finish(error=exc)

    def abandon(self, exc: Exception) -> None:
        """The store closes: whoever waits for a pass gets `exc`."""
        self._finish(error=exc)

    def _finish(self, *, result: int = 0, error: Exception | None = None) -> None:
        self._cutoff = None
        self._next_at = self._monotonic() + self.period
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            if not future.set_running_or_notify_cancel():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
