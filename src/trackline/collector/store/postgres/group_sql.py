"""The SQL of one group's transaction on PostgreSQL (see `writer.py` for its steps): which
rows are new, sending them with COPY, the careful path when one was stored before, and the
counts and notification that go with them."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import errors

from trackline.collector.ingest import Row
from trackline.collector.store.postgres.partitions import Partitions, part_of
from trackline.collector.store.postgres.schema import BLOCK, CHANNEL, SCHEMA, partition_table

COLUMNS: Final = ", ".join(Row._fields)
TYPES: Final = ["int8"] + ["text"] * len(Row._fields)
STAGING: Final = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS staging (id bigint, "
    + ", ".join(f"{column} text" for column in Row._fields)
    + ") ON COMMIT DELETE ROWS"
)
BOOKKEEPING: Final = f"""
WITH counted AS (
    INSERT INTO {SCHEMA}.event_counts (part, type, source, n)
    SELECT * FROM unnest(%s::int[], %s::text[], %s::text[], %s::bigint[])
), totalled AS (
    INSERT INTO {SCHEMA}.totals (duplicates, rejected, unroutable) SELECT %s, %s, %s WHERE %s
)
SELECT pg_notify('{CHANNEL}', %s) WHERE %s
"""


#: What `clear()` empties (destinations stay: their ids are cached by every process).
CLEARED: Final = ", ".join(
    f"{SCHEMA}.{table}"
    for table in ("events", "event_counts", "totals", "jobs", "job_status", "job_counts")
)


class Conflict(Exception):
    """A messageId of the group is already stored in its partition: take the careful path."""


def new_rows(
    conn: psycopg.Connection[Any],
    partitions: Partitions,
    rows: Sequence[Row],
    ids: Sequence[int],
) -> list[int]:
    """Positions of rows to store: the first of each messageId in the group, unless the
    partition before the one it goes to holds it already."""
    seen: set[str] = set()
    fresh: list[int] = []
    for index, row in enumerate(rows):
        if row.message_id not in seen:
            seen.add(row.message_id)
            fresh.append(index)
    by_previous: dict[int, list[int]] = collections.defaultdict(list)
    for index in fresh:
        previous = partitions.previous(part_of(ids[index]))
        if previous is not None:
            by_previous[previous].append(index)
    stored_before: set[str] = set()
    for previous, positions in by_previous.items():
        found = conn.execute(
            "SELECT value FROM jsonb_array_elements_text(%s::jsonb) AS wanted(value) "
            f"WHERE EXISTS (SELECT 1 FROM {partition_table(previous)} "
            "WHERE message_id = wanted.value)",
            (orjson.dumps([rows[index].message_id for index in positions]).decode(),),
        ).fetchall()
        stored_before.update(value for (value,) in found)
    if stored_before:
        fresh = [index for index in fresh if rows[index].message_id not in stored_before]
    return fresh


def copy_rows(
    cur: psycopg.Cursor[Any], rows: Sequence[Row], ids: Sequence[int], fresh: Sequence[int]
) -> None:
    try:
        with cur.copy(f"COPY {SCHEMA}.events (id, {COLUMNS}) FROM STDIN (FORMAT BINARY)") as c:
            c.set_types(TYPES)
            for index in fresh:
                c.write_row((ids[index], *rows[index]))
    except errors.UniqueViolation:
        raise Conflict() from None


def insert_carefully(
    cur: psycopg.Cursor[Any], rows: Sequence[Row], ids: Sequence[int], fresh: Sequence[int]
) -> set[int]:
    cur.execute(STAGING)
    with cur.copy(f"COPY staging (id, {COLUMNS}) FROM STDIN (FORMAT BINARY)") as c:
        c.set_types(TYPES)
        for index in fresh:
            c.write_row((ids[index], *rows[index]))
    cur.execute(
        f"INSERT INTO {SCHEMA}.events (id, {COLUMNS}) SELECT id, {COLUMNS} FROM staging "
        "ORDER BY id ON CONFLICT DO NOTHING RETURNING id"
    )
    position = {ids[index]: index for index in fresh}
    return {position[event_id] for (event_id,) in cur.fetchall()}


def bookkeeping(
    cur: psycopg.Cursor[Any],
    rows: Sequence[Row],
    ids: Sequence[int],
    stored: set[int],
    rejected: int,
    unroutable: int,
    token: str,
) -> None:
    counts: collections.Counter[tuple[int, str, str]] = collections.Counter(
        (part_of(ids[index]), rows[index].type, rows[index].source) for index in stored
    )
    duplicates = len(rows) - len(stored)
    payload = ""
    if stored:
        # The blocks holding stored rows: a listener reads exactly this transaction's rows.
        blocks = sorted({ids[index] - ids[index] % BLOCK for index in stored})
        payload = " ".join([token, *map(str, blocks)])
    keys = list(counts)
    cur.execute(
        BOOKKEEPING,
        (
            [key[0] for key in keys],
            [key[1] for key in keys],
            [key[2] for key in keys],
            [counts[key] for key in keys],
            duplicates,
            rejected,
            unroutable,
            duplicates > 0 or rejected > 0 or unroutable > 0,
            payload,
            bool(payload),
        ),
    )
