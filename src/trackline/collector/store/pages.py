"""One page of a listing as every engine hands it on: items gathered into pieces of about
64 KB (a JSON array, or NDJSON lines), and where the walk goes next.

An engine says which rows a page holds (their row id and JSON text, in the walk's order, at
most `limit + 1` of them: one more than the page holds tells that the walk goes on) and where
the window of a `windowed` query ended; this module does the rest, so both engines page the
same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from trackline.collector.store.base import EventQuery

#: Bytes of a listing gathered before they are handed on as one piece.
PIECE_BYTES: Final = 64 * 1024


class Page:
    """The items of one page, handed on in pieces; then how many there were and the last
    row id, which is where the next page starts."""

    def __init__(self, query: EventQuery, *, lines: bool = False) -> None:
        self._limit = query.limit
        self._lines = lines
        self._pieces: list[bytes] = [] if lines else [b"["]
        self._size = len(self._pieces)
        self._separator = b""
        self.count = 0
        self.last_id: int | None = None
        #: A row beyond `limit` was met: the walk goes on after `last_id`.
        self.more = False

    def add(self, rows: Iterable[tuple[int, object]]) -> bytes | None:
        """Take rows (row id, the item's JSON text); a piece once about `PIECE_BYTES` are
        gathered, else None. Rows past the page's `limit` are only noted (`more`)."""
        for row_id, item in rows:
            if self.count == self._limit:
                self.more = True
                break
            data = str(item).encode()
            if self._lines:
                self._pieces += (data, b"\n")
            else:
                self._pieces += (self._separator, data)
                self._separator = b","
            self._size += len(data) + 1
            self.count += 1
            self.last_id = row_id
        if self._size < PIECE_BYTES:
            return None
        piece = b"".join(self._pieces)
        self._pieces, self._size = [], 0
        return piece

    def end(self) -> bytes:
        """The rest of the page (with the closing bracket of an array)."""
        if not self._lines:
            self._pieces.append(b"]")
        piece = b"".join(self._pieces)
        self._pieces, self._size = [], 0
        return piece


def following(
    query: EventQuery, page: Page, *, edge: int | None, until: int | None = None
) -> EventQuery | None:
    """The query of the page after `page`, or None at the end of the walk.

    A full page continues after its last row. A shorter one is the end, unless its query is
    `windowed` and the window it scanned stopped short of the end of the store (`edge`: the
    lowest row id of the window newest first, the highest oldest first): then the next page
    continues past the window, even when this one found nothing in it. `until` is the walk's
    highest row id oldest first (fixed by the first page)."""
    if page.more and page.last_id is not None:
        position = page.last_id
    elif edge is not None:
        position = edge
    else:
        return None
    if query.ascending:
        return dataclasses.replace(query, after_id=position, until_id=until)
    return dataclasses.replace(query, before_id=position)
