"""How the SQLite store finds events by messageId: an indexed 64-bit key of the id.

Dedupe needs every new row's messageId looked up among everything stored, and the lookup index
is the one index whose new entries land at random (ids are UUIDs): once it outgrows the page
cache, each new event costs a leaf page read and that page written to the log, and again to the
file at the checkpoint. A unique index of the id text itself did that with entries about 50
bytes long; an index of an 8-byte key of the id holds about three times as many entries a page,
so more of it stays cached and a commit dirties fewer pages (bench/curve.py; the numbers are in
docs/architecture.md).

The key is BLAKE2b of the id, keyed with the store's secret (`sqlite_setup.key_secret`), so no
one sending events can choose ids whose keys collide and make lookups read many rows. Two ids
that share a key are told apart by comparing the ids themselves, so dedupe stays exact over the
whole history, as a unique index was.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

#: Bytes of the key: 64 bits, a signed SQLite INTEGER.
KEY_BYTES: Final = 8
#: Keys per lookup statement (SQLite caps the number of parameters of one statement).
KEYS_PER_STATEMENT: Final = 2000


class MessageKeys:
    """The keys of messageIds in the store whose secret is `secret`: `keys(message_id)`."""

    __slots__ = ("_base",)

    def __init__(self, secret: bytes) -> None:
        # Copying a keyed hash costs less than keying a new one for every id.
        self._base = hashlib.blake2b(digest_size=KEY_BYTES, key=secret)

    def __call__(self, message_id: str) -> int:
        """The key of `message_id`. A lone surrogate (which UTF-8 cannot carry) is hashed as
        it is; storing it still fails later, for its own request only."""
        hashed = self._base.copy()
        hashed.update(message_id.encode("utf-8", "surrogatepass"))
        return int.from_bytes(hashed.digest(), "big", signed=True)


def stored_ids(conn: sqlite3.Connection, keys: Sequence[int]) -> set[str]:
    """The messageIds already stored among the events whose key is one of `keys`: a superset's
    worth of candidates, which the caller compares with its own ids."""
    found: set[str] = set()
    for start in range(0, len(keys), KEYS_PER_STATEMENT):
        part = keys[start : start + KEYS_PER_STATEMENT]
        marks = ",".join("?" * len(part))
        found.update(
            message_id
            for (message_id,) in conn.execute(
                f"SELECT message_id FROM events WHERE message_key IN ({marks})", part
            )
        )
    return found


def new_rows(
    conn: sqlite3.Connection, message_ids: Sequence[str], keys: Sequence[int]
) -> list[bool]:
    """For each messageId in order, whether it is new: not stored, and not earlier in the same
    sequence (the first of a repeated id is the one stored)."""
    stored = stored_ids(conn, keys)
    fresh: list[bool] = []
    for message_id in message_ids:
        if message_id in stored:
            fresh.append(False)
        else:
            stored.add(message_id)
            fresh.append(True)
    return fresh


def find_event(
    conn: sqlite3.Connection, keys: MessageKeys, message_id: str, columns: str
) -> Any | None:
    """`columns` of the stored event with `message_id`, or None."""
    return conn.execute(
        f"SELECT {columns} FROM events WHERE message_key = ? AND message_id = ?",
        (keys(message_id), message_id),
    ).fetchone()
