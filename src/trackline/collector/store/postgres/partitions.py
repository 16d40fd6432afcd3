"""Partitions of the events table: which exist, switching the one being written, dropping old
ones whole, and folding the counters. One process at a time does this (an advisory lock).

Switching partitions must keep dedupe exact. A write checks its rows against the partition it
writes and the one before; for that check to see every row of the one before, no transaction
may still be writing there once writing here has begun. Every write transaction holds the
rotation lock shared, and switching takes it exclusively: it waits for those in flight, moves
the id sequence into the next partition's range, and from then on every block, hence every
row, lands in the new partition.

Dropping is done in steps that can be resumed when a process dies in between: the counts of
the partition go (so `/api/stats` no longer counts it) and it is marked, then it is detached
(`DETACH ... CONCURRENTLY`, which does not block readers or writers) and dropped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from typing import Any, Final

import psycopg

from trackline.collector.store.postgres.job_rows import ENDED, LATEST
from trackline.collector.store.postgres.schema import (
    LOCK_SPACE,
    MAINTENANCE_LOCK,
    PARTITIONED,
    ROTATE_LOCK,
    SCHEMA,
    SPAN,
    create_partition,
    partition_table,
)

logger = logging.getLogger(__name__)

#: A partition is switched once this share of its id span is used, whatever its age.
FULL_SHARE: Final = 0.875


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    number: int
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None
    dropped_at: dt.datetime | None


class Partitions:
    """What a process knows of the partitions; reloaded when a block lands in one it does not
    know. Safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[int, Partition] = {}

    def load(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            f"SELECT number, opened_at, closed_at, dropped_at FROM {SCHEMA}.partitions"
        ).fetchall()
        with self._lock:
            self._known = {row[0]: Partition(*row) for row in rows}

    def knows(self, number: int) -> bool:
        with self._lock:
            return number in self._known

    def previous(self, number: int) -> int | None:
        """The partition written before `number`, when it still holds rows to dedupe against."""
        with self._lock:
            before = self._known.get(number - 1)
        if before is None or before.dropped_at is not None:
            return None
        return before.number


def part_of(event_id: int) -> int:
    """The partition holding `event_id`."""
    return event_id // SPAN


class Maintenance:
    """One pass of upkeep: the next partition made ahead, the current one switched when it is
    `period` seconds old or nearly full, partitions older than `retention` dropped, counters
    folded. Returns quietly when another process holds the maintenance lock."""

    def __init__(self, period: float, retention: float | None) -> None:
        self.period = period
        self.retention = retention

    def run(self, conn: psycopg.Connection[Any]) -> bool:
        """One pass on `conn` (autocommit); False when another process is doing it."""
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, MAINTENANCE_LOCK)
        ).fetchone()
        if row is None or not row[0]:
            return False
        try:
            current = self._current(conn)
            with conn.transaction():
                create_partition(conn, current + 1)
            if self._due(conn, current):
                self._rotate(conn, current)
                with conn.transaction():
                    create_partition(conn, current + 2)
            if self.retention is not None:
                self._drop_expired(conn)
            self._fold(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, MAINTENANCE_LOCK))
        return True

    @staticmethod
    def _current(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            f"SELECT max(number) FROM {SCHEMA}.partitions WHERE opened_at IS NOT NULL"
        ).fetchone()
        assert row is not None
        assert row[0] is not None, "partition 0 is made by the migration"
        return int(row[0])

    def _due(self, conn: psycopg.Connection[Any], current: int) -> bool:
        row = conn.execute(
            f"SELECT now() - opened_at >= make_interval(secs => %s), "
            f"(SELECT last_value FROM {SCHEMA}.event_blocks) "
            f"FROM {SCHEMA}.partitions WHERE number = %s",
            (self.period, current),
        ).fetchone()
        assert row is not None
        aged, last_block = row
        used = (int(last_block) - current * SPAN) / SPAN
        return bool(aged) or used >= FULL_SHARE

    @staticmethod
    def _rotate(conn: psycopg.Connection[Any], current: int) -> None:
        """Move writing from `current` to the next partition (see the module docstring)."""
        following = current + 1
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, ROTATE_LOCK))
            row = conn.execute(f"SELECT last_value FROM {SCHEMA}.event_blocks").fetchone()
            assert row is not None
            if int(row[0]) < following * SPAN:
                conn.execute(
                    f"SELECT setval('{SCHEMA}.event_blocks', %s, false)", (following * SPAN,)
                )
            conn.execute(
                f"UPDATE {SCHEMA}.partitions SET closed_at = now() WHERE number = %s", (current,)
            )
            conn.execute(
                f"UPDATE {SCHEMA}.partitions SET opened_at = now() WHERE number = %s",
                (following,),
            )
        logger.info("events now go to partition %d", following)

    def _drop_expired(self, conn: psycopg.Connection[Any]) -> None:
        assert self.retention is not None
        expired = conn.execute(
            f"SELECT number, dropped_at IS NOT NULL FROM {SCHEMA}.partitions "
            "WHERE closed_at < now() - make_interval(secs => %s) ORDER BY number",
            (self.retention,),
        ).fetchall()
        for number, marked in expired:
            if not marked:
                with conn.transaction():
                    conn.execute(f"DELETE FROM {SCHEMA}.event_counts WHERE part = %s", (number,))
                    # Jobs still owed go with their events: counted failed, never silently.
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.job_counts (destination, pending, retrying, "
                        "failed, last_error, last_error_at) SELECT j.destination, "
                        "-count(*) FILTER (WHERE coalesce(st.attempts, 0) = 0), "
                        "-count(*) FILTER (WHERE coalesce(st.attempts, 0) > 0), count(*), "
                        "'dropped with its event by the retention before delivery', "
                        f"clock_timestamp() FROM {partition_table(number, 'jobs')} AS j {LATEST} "
                        "WHERE st.state IS NULL OR NOT st.state = ANY(%s) GROUP BY j.destination",
                        (sorted(ENDED),),
                    )
                    conn.execute(
                        f"UPDATE {SCHEMA}.partitions SET dropped_at = now() WHERE number = %s",
                        (number,),
                    )
            self._drop(conn, number)
            logger.info("dropped partition %d (older than the retention)", number)

    @staticmethod
    def _drop(conn: psycopg.Connection[Any], number: int) -> None:
        for parent in PARTITIONED:
            table = partition_table(number, parent)
            row = conn.execute(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if row is not None:
                finish = " FINALIZE" if row[0] else " CONCURRENTLY"
                conn.execute(f"ALTER TABLE {SCHEMA}.{parent} DETACH PARTITION {table}{finish}")
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"DELETE FROM {SCHEMA}.partitions WHERE number = %s", (number,))

    @staticmethod
    def _fold(conn: psycopg.Connection[Any]) -> None:
        """Replace the appended counter rows by their sums. Rows appended meanwhile by other
        transactions are not in this statement's snapshot, so they are neither deleted nor
        summed: the totals never move."""
        conn.execute(
            f"WITH gone AS (DELETE FROM {SCHEMA}.event_counts RETURNING part, type, source, n) "
            f"INSERT INTO {SCHEMA}.event_counts "
            "SELECT part, type, source, sum(n) FROM gone GROUP BY part, type, source"
        )
        conn.execute(
            f"WITH gone AS (DELETE FROM {SCHEMA}.totals RETURNING *) INSERT INTO {SCHEMA}.totals "
            "SELECT sum(duplicates), sum(rejected), sum(unroutable) FROM gone "
            "HAVING count(*) > 0"
        )
        conn.execute(
            f"WITH gone AS (DELETE FROM {SCHEMA}.job_counts RETURNING *) "
            f"INSERT INTO {SCHEMA}.job_counts SELECT destination, sum(pending), sum(retrying), "
            "sum(delivered), sum(failed), "
            "(array_agg(last_error ORDER BY last_error_at DESC NULLS LAST))[1], "
            "max(last_error_at), max(last_success_at) FROM gone GROUP BY destination"
        )
