"""Reading a store page by page through `Store.event_pieces` and the query it returns."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from trackline.collector.store import EventQuery, Store


def page(
    store: Store, query: EventQuery, *, lines: bool = False
) -> tuple[bytes, EventQuery | None]:
    """One page's bytes, and the next page's query."""
    pieces = store.event_pieces(query, lines=lines)
    parts: list[bytes] = []
    try:
        while True:
            parts.append(next(pieces))
    except StopIteration as end:
        return b"".join(parts), end.value


def walk(store: Store, query: EventQuery) -> Iterator[list[str]]:
    """The messageIds of each page of a walk, until `next` is None; each page is read only
    when asked for, so a caller may change the store between pages."""
    following: EventQuery | None = query
    while following is not None:
        body, following = page(store, following)
        yield [event["messageId"] for event in orjson.loads(body)]
