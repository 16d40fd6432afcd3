"""The `cursor` of `GET /api/events`: where a walk through the store goes on, as text.

Opaque to clients (they pass back the `next` of the answer before), short and URL-safe: `d`
and the row id to continue below (newest first), or `a`, the row id to continue above and the
highest row id of the walk (oldest first: fixed by its first page, so that the walk ends while
events keep arriving). What the text means is this module's business only; the filters are
not in it, and a client sends them with every page.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from trackline.collector.store import EventQuery

_DESC: Final = re.compile(r"d(\d{1,18})")
_ASC: Final = re.compile(r"a(\d{1,18})\.(\d{1,18})")


def encode(query: EventQuery) -> str:
    """The cursor of `query`, a page that a store returned as the next one."""
    if query.ascending:
        return f"a{query.after_id or 0}.{query.until_id or 0}"
    return f"d{query.before_id or 0}"


def apply(query: EventQuery, cursor: str) -> EventQuery:
    """`query` continued where `cursor` says; raises ValueError for a text that no collector
    made."""
    if found := _DESC.fullmatch(cursor):
        return dataclasses.replace(query, ascending=False, before_id=int(found[1]))
    if found := _ASC.fullmatch(cursor):
        return dataclasses.replace(
            query, ascending=True, after_id=int(found[1]), until_id=int(found[2])
        )
    raise ValueError("is not a cursor this collector made: pass back an answer's `next`")
