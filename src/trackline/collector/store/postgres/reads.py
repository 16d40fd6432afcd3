"""The read side of the PostgreSQL store: the SQL behind `/api/events`, one event, and
`/api/stats`. Each function takes a connection and returns what the `Store` interface does.

A listing is read through a server-side cursor and handed on in pieces, so the largest
answer costs a piece's memory; the items are composed as JSON text by PostgreSQL (the bodies
are stored JSON already). Newest first is `ORDER BY id DESC` over a table partitioned by id
ranges: PostgreSQL reads the newest partition's index first and stops at the limit.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import errors

from trackline.collector.store.base import (
    MAX_SCAN_ROWS,
    READ_BUDGET_SECONDS,
    EventQuery,
    ReadTooCostly,
    Stats,
)
from trackline.collector.store.postgres.schema import SCHEMA

#: An event with its row id and source, composed as text: the body is already JSON.
_META_ITEM: Final = (
    """'{"id":' || id || ',"source":' || to_json(source)::text || ',"message":' || body || '}'"""
)
_FILTERS: Final = ("type", "user_id", "anonymous_id", "event", "source")
#: Bytes of a listing gathered before they are handed on as one piece.
PIECE_BYTES: Final = 64 * 1024


def listing_sql(query: EventQuery, *, meta: bool = False) -> tuple[str, list[object]]:
    """The statement behind `Store.events`: one row per event, the JSON text of each, newest
    first. `q` and `source`, which no index serves, only look at the newest `MAX_SCAN_ROWS`
    events (so do the other filters then, as in the SQLite engine)."""
    clauses: list[str] = []
    params: list[object] = []
    for column in _FILTERS:
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if query.since is not None:
        clauses.append("received_at >= %s")
        params.append(query.since)
    if query.q:
        escaped = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # ILIKE: SQLite's LIKE, which the other engine uses, ignores case too.
        clauses.append("body ILIKE %s ESCAPE '\\'")
        params.append(f"%{escaped}%")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    item = _META_ITEM if meta else "body"
    source = f"{SCHEMA}.events"
    if query.q or query.source is not None:
        source = f"(SELECT * FROM {SCHEMA}.events ORDER BY id DESC LIMIT {MAX_SCAN_ROWS}) AS recent"
    sql = f"SELECT {item} FROM {source} {where} ORDER BY id DESC LIMIT %s"
    return sql, [*params, query.limit]


def listing(
    conn: psycopg.Connection[Any], sql: str, params: Sequence[object]
) -> Generator[bytes, None, None]:
    """The rows of `sql`, as one JSON array handed over in pieces of about `PIECE_BYTES`,
    read through a server-side cursor; each fetch may take `READ_BUDGET_SECONDS` of database
    work (`ReadTooCostly` past it). `conn` must be idle; the listing runs in a transaction."""
    with conn.transaction():
        conn.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            (str(math.ceil(READ_BUDGET_SECONDS * 1000)),),
        )
        with conn.cursor(name="trackline_listing") as cur:
            try:
                cur.execute(sql, params)
                pieces = [b"["]
                size = 1
                separator = b""
                while rows := cur.fetchmany(128):
                    for (item,) in rows:
                        data = str(item).encode()
                        pieces += (separator, data)
                        size += len(data) + 1
                        separator = b","
                    if size >= PIECE_BYTES:
                        yield b"".join(pieces)
                        pieces, size = [], 0
            except errors.QueryCanceled as exc:
                if "statement timeout" not in str(exc):
                    raise
                raise ReadTooCostly(f"stopped after {READ_BUDGET_SECONDS} s") from None
    pieces.append(b"]")
    yield b"".join(pieces)


def event(conn: psycopg.Connection[Any], message_id: str) -> bytes | None:
    """The stored message with `message_id`, or None."""
    row = conn.execute(
        f"SELECT body FROM {SCHEMA}.events WHERE message_id = %s LIMIT 1", (message_id,)
    ).fetchone()
    return None if row is None else str(row[0]).encode()


def stats(conn: psycopg.Connection[Any]) -> Stats:
    """Totals by type and by source, and the duplicate, rejected and unroutable counts."""
    # One statement, so the counts and the totals come from one snapshot.
    row = conn.execute(
        "SELECT (SELECT coalesce(json_agg(json_build_array(type, source, n)), '[]')::text "
        f"FROM (SELECT type, source, sum(n) AS n FROM {SCHEMA}.event_counts "
        "GROUP BY type, source) AS c), coalesce(sum(duplicates), 0), coalesce(sum(rejected), 0), "
        f"coalesce(sum(unroutable), 0) FROM {SCHEMA}.totals"
    ).fetchone()
    assert row is not None
    counts = orjson.loads(row[0])
    duplicates, rejected, unroutable = int(row[1]), int(row[2]), int(row[3])
    by_type: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for kind, source, n in counts:
        by_type[kind] = by_type.get(kind, 0) + int(n)
        by_source[source] = by_source.get(source, 0) + int(n)
    return Stats(sum(by_type.values()), by_type, by_source, duplicates, rejected, unroutable)
