"""The read side of the PostgreSQL store: the SQL behind `/api/events`, one event, and
`/api/stats`. Each function takes a connection and returns what the `Store` interface does.

Lists are composed as JSON text by PostgreSQL (the bodies are stored JSON already), so a page
of events is one row fetched, not one per event. Newest first is `ORDER BY id DESC` over a
table partitioned by id ranges: PostgreSQL reads the newest partition's index first and stops
at the limit.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import psycopg

from trackline.collector.store.base import EventQuery, Stats
from trackline.collector.store.postgres.schema import SCHEMA

#: An event with its row id and source, composed as text: the body is already JSON.
_META_ITEM: Final = (
    """'{"id":' || id || ',"source":' || to_json(source)::text || ',"message":' || body || '}'"""
)
_FILTERS: Final = ("type", "user_id", "anonymous_id", "event", "source")


def events(conn: psycopg.Connection[Any], query: EventQuery, *, meta: bool = False) -> bytes:
    """Stored messages matching `query`, newest first, as one JSON array (see `Store.events`)."""
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
    row = conn.execute(
        "SELECT '[' || coalesce(string_agg(item, ',' ORDER BY id DESC), '') || ']' FROM "
        f"(SELECT id, {item} AS item FROM {SCHEMA}.events {where} "
        "ORDER BY id DESC LIMIT %s) AS page",
        (*params, query.limit),
    ).fetchone()
    assert row is not None
    return str(row[0]).encode()


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
