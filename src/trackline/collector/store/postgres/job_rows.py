"""Rows of the job tables and the few things every job operation shares: the states a status
row records, how status rows and count deltas are appended (COPY; one delta row per
destination per transaction), the SQL that reads a job's newest status, and the cache of
destination ids."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from typing import Any, Final

import psycopg

from trackline.collector.store.jobs import JobStatus
from trackline.collector.store.postgres.schema import LOCK_SPACE, SCHEMA

#: First key of the advisory locks that make one destination's claims and settlements take
#: turns (the second key is the destination's id).
JOBS_LOCK_SPACE: Final = LOCK_SPACE + 1

#: A status row's state; `claimed` is held until its lease ends; the rest as `JobStatus`.
CLAIMED: Final = "claimed"
RELEASED: Final = "released"
RETRY: Final = "retry"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
#: A dead letter queued again as a new job: ended, counted nowhere.
REPLAYED: Final = "replayed"
ENDED: Final = frozenset({DELIVERED, FAILED, REPLAYED})

STATUS_COLUMNS: Final = (
    "destination, job_id, state, attempts, not_before, first_attempt_at, error, claim, lease_until"
)
STATUS_TYPES: Final = [
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
ISO: Final = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


@dataclasses.dataclass(slots=True)
class Delta:
    """Changes to one destination's counts within one transaction."""

    pending: int = 0
    retrying: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    failed_now: bool = False
    succeeded_now: bool = False


def append_counts(conn: psycopg.Connection[Any], deltas: dict[int, Delta]) -> None:
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


def append_statuses(cur: psycopg.Cursor[Any], rows: Iterable[tuple[Any, ...]]) -> None:
    with cur.copy(
        f"COPY {SCHEMA}.job_status ({STATUS_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(STATUS_TYPES)
        for row in rows:
            copy.write_row(row)


def status_of(state: str | None, attempts: int) -> JobStatus:
    if state == DELIVERED:
        return JobStatus.DELIVERED
    if state == FAILED:
        return JobStatus.FAILED
    return JobStatus.RETRYING if attempts else JobStatus.PENDING


class Destinations:
    """Destination ids by name, learnt from the database once per process; any thread."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

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

    def id_of(self, name: str) -> int | None:
        with self._lock:
            return self._ids.get(name)

    def known(self) -> dict[str, int]:
        """Every id learnt so far, by name."""
        with self._lock:
            return dict(self._ids)
