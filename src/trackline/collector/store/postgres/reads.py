"""The read side of the PostgreSQL store: the SQL behind `/api/events`, one event, and
`/api/stats`. Each function takes a connection and returns what the `Store` interface does.

A listing is read through a server-side cursor and handed on in pieces, so the largest
answer costs a piece's memory; the items are composed as JSON text by PostgreSQL (the bodies
are stored JSON already). Newest first is `ORDER BY id DESC` over a table partitioned by id
ranges: PostgreSQL reads the newest partition's index first and stops at the limit; a page
further on starts below its cursor's row id the same way.
"""

from __future__ import annotations

import math
from collections.abc import Generator
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
from trackline.collector.store.filters import filter_conditions
from trackline.collector.store.pages import Page, following
from trackline.collector.store.postgres.schema import SCHEMA

#: An event with its row id and source, composed as text: the body is already JSON.
_META_ITEM: Final = (
    """'{"id":' || id || ',"source":' || to_json(source)::text || ',"message":' || body || '}'"""
)


def listing(
    conn: psycopg.Connection[Any], query: EventQuery, *, meta: bool = False, lines: bool = False
) -> Generator[bytes, None, EventQuery | None]:
    """One page of `Store.event_pieces`: the JSON text of each event (newest first unless
    `ascending`), handed over in pieces of about `pages.PIECE_BYTES`, read through a server-side
    cursor; returns the next page's query. Each statement may take `READ_BUDGET_SECONDS` of
    database work (`ReadTooCostly` past it). `conn` must be idle; the page is read in one
    transaction.

    Row ids here come in blocks and jump at each partition, so the window of a `windowed`
    query is counted in rows: its edge is the `MAX_SCAN_ROWS`-th row id past the cursor (an
    index-only walk of the primary keys), found first; the page then reads the rows up to it
    and applies the filters."""
    clauses, params = filter_conditions(query, placeholder="%s", like="ILIKE")
    item = _META_ITEM if meta else "body"
    table = f"{SCHEMA}.events"
    page = Page(query, lines=lines)
    with conn.transaction():
        conn.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            (str(math.ceil(READ_BUDGET_SECONDS * 1000)),),
        )
        try:
            edge: int | None = None
            until = query.until_id
            if query.ascending:
                if until is None:
                    row = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
                    until = None if row is None else row[0]
                    if until is None:
                        yield page.end()
                        return None
                bounds = ["id <= %s"]
                bound_params: list[object] = [until]
                if query.after_id is not None:
                    bounds.append("id > %s")
                    bound_params.append(query.after_id)
                order = "ASC"
            else:
                bounds, bound_params = [], []
                if query.before_id is not None:
                    bounds.append("id < %s")
                    bound_params.append(query.before_id)
                order = "DESC"
            if query.windowed:
                where = f"WHERE {' AND '.join(bounds)}" if bounds else ""
                # The window's last row, if a row lies beyond it (else it reaches the end).
                found = conn.execute(
                    f"SELECT id FROM {table} {where} ORDER BY id {order} "
                    f"OFFSET {MAX_SCAN_ROWS - 1} LIMIT 2",
                    bound_params,
                ).fetchall()
                if len(found) == 2:
                    edge = int(found[0][0])
                    bounds.append("id <= %s" if query.ascending else "id >= %s")
                    bound_params.append(edge)
            conditions = [*bounds, *clauses]
            where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
            sql = f"SELECT id, {item} FROM {table} {where} ORDER BY id {order} LIMIT %s"
            with conn.cursor(name="trackline_listing") as cur:
                cur.execute(sql, [*bound_params, *params, query.limit + 1])
                while rows := cur.fetchmany(128):
                    piece = page.add(rows)
                    if piece is not None:
                        yield piece
        except errors.QueryCanceled as exc:
            if "statement timeout" not in str(exc):
                raise
            raise ReadTooCostly(f"stopped after {READ_BUDGET_SECONDS} s") from None
    yield page.end()
    return following(query, page, edge=edge, until=until)


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
