"""Replaying delivery jobs on PostgreSQL: stored events queued again for a destination, a
chunk of events per transaction. Each gets a new job with a fresh id block, so it is claimed
after what is queued now; a dead letter among them is marked `replayed` (it ended, and is
counted no more as failed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg

from trackline.collector.store.jobs import order_key
from trackline.collector.store.postgres.job_rows import (
    ENDED,
    FAILED,
    JOBS_LOCK_SPACE,
    LATEST,
    REPLAYED,
    Delta,
    Destinations,
    append_counts,
    append_statuses,
)
from trackline.collector.store.postgres.schema import BLOCK, LOCK_SPACE, ROTATE_LOCK, SCHEMA

#: Events one replay transaction handles.
REPLAY_CHUNK: Final = 5000


def replay_chunk(
    conn: psycopg.Connection[Any],
    name: str,
    after: int,
    *,
    failed_only: bool,
    since: str | None,
    selects: Callable[[str], bool] | None,
    destinations: Destinations,
) -> tuple[int, int | None]:
    """One transaction of `Store.replay`: the events after event id `after`, a chunk of
    them, each getting a new job (a fresh id block, so it is claimed after what is queued
    now); a dead letter among them is marked replayed. Returns how many were queued and
    where the next chunk starts (None when done)."""
    destinations.ids(conn, [name], create=True)
    destination = destinations.id_of(name)
    assert destination is not None
    with conn.transaction():
        # Writers of jobs hold this lock shared and take a transaction id before ids:
        # claims' floors rely on it (see job_claims.py).
        conn.execute(
            "SELECT pg_advisory_xact_lock_shared(%s, %s), pg_current_xact_id()",
            (LOCK_SPACE, ROTATE_LOCK),
        )
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (JOBS_LOCK_SPACE, destination))
        candidates = _candidates(conn, destination, after, failed_only, since)
        if not candidates:
            return 0, None
        queued = _requeue(conn, destination, candidates, selects, failed_only)
    return queued, int(candidates[-1][0])


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
            f"COPY {SCHEMA}.jobs (destination, id, event_id, order_key) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "int8", "int8", "int8"])
            for index, (event_id, key, _, _) in enumerate(chosen):
                new_id = starts[index // BLOCK] + index % BLOCK
                copy.write_row((destination, new_id, event_id, key))
        if was_failed:
            append_statuses(
                cur,
                ((d, job_id, REPLAYED, 0, 0.0, None, None, None, None) for d, job_id in was_failed),
            )
    append_counts(conn, {destination: Delta(pending=len(chosen), failed=-len(was_failed))})
    return len(chosen)
