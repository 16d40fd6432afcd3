"""The conditions behind `GET /api/events`'s filters, written once for every engine: the
engines differ only in their parameter placeholder and in which LIKE ignores case, so a filter
added here reads the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Final

from trackline.collector.store.base import EventQuery

#: Filters compared for equality with the column of the same name.
EQUALITY_FILTERS: Final = ("type", "user_id", "anonymous_id", "event", "source")


def filter_conditions(
    query: EventQuery, *, placeholder: str, like: str
) -> tuple[list[str], list[object]]:
    """The WHERE conditions (to be joined with AND) and their parameters for `query`'s
    filters; paging bounds are the engine's. `like` is the operator that matches `q` without
    regard to case (SQLite's LIKE, PostgreSQL's ILIKE); `%`, `_` and `\\` in `q` match
    themselves."""
    clauses: list[str] = []
    params: list[object] = []
    for column in EQUALITY_FILTERS:
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    if query.since is not None:
        clauses.append(f"received_at >= {placeholder}")
        params.append(query.since)
    if query.q:
        escaped = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"body {like} {placeholder} ESCAPE '\\'")
        params.append(f"%{escaped}%")
    return clauses, params
