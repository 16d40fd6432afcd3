"""Preparing a SQLite store's file: created readable by its owner only, its key id secret made
once, and a file an earlier release wrote brought up to the current schema.

The events are personal data, so the database is created 0600 before SQLite opens it; SQLite
gives its `-wal` and `-shm` files the database's mode. Schema 1 kept each event's raw write key
in `source`: opening such a file rewrites every one to its key id, with SQLite's secure delete
on (the old bytes are overwritten, not left in free space) and the write-ahead log truncated
afterwards, and narrows the files to 0600 since the release that made them did not.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import stat
import time
from pathlib import Path
from typing import Final

from trackline.collector.access.keys import key_id
from trackline.collector.store.sqlite_keys import MessageKeys

logger = logging.getLogger(__name__)

#: 2: key ids instead of write keys in `source`, and the `meta` table. 3: the delivery jobs
#: (`sqlite_jobs.SCHEMA`, created with the other tables) and `totals.unroutable`. 4: no
#: indexes of userId and anonymousId (random keys: see `EVENTS_SCHEMA`). 5: `message_key` and
#: its index instead of a unique messageId (see `sqlite_keys.py`); the table is copied once.
SCHEMA_VERSION: Final = 5
#: Indexes that schema 4 dropped.
_DROPPED_INDEXES: Final = ("events_user_id", "events_anonymous_id")
_SECRET_NAME: Final = "key_id_secret"
#: The events columns schema 5 copies from an older table, spelled out (not taken from
#: `ingest.Row`, which may change): the migration reads the table as schemas 1 to 4 made it.
_EVENT_COLUMNS: Final = (
    "id, message_id, type, user_id, anonymous_id, event, source, received_at, timestamp, body"
)

#: The events table (named `{table}`, so that schema 5 can build the new one beside the old).
#: AUTOINCREMENT: row ids are never reused, even after a clear, so a reader's "newer than"
#: cursor stays right. `message_key` finds an event by messageId (`sqlite_keys.py`).
_EVENTS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    message_key INTEGER NOT NULL,
    type TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    event TEXT,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    body TEXT NOT NULL
);
"""
#: Only indexes whose new entries land next to each other (few distinct types and event names,
#: times that grow) are kept, and the one dedupe needs, of short keys: an index of random keys
#: (userId, anonymousId) costs a page written per event once it outgrows the cache (see
#: docs/architecture.md). Created after `upgrade`, since an older table lacks `message_key`.
EVENTS_INDEXES: Final = """
CREATE INDEX IF NOT EXISTS events_type ON events (type);
CREATE INDEX IF NOT EXISTS events_event ON events (event) WHERE event IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at);
CREATE INDEX IF NOT EXISTS events_message_key ON events (message_key);
"""
EVENTS_TABLE: Final = _EVENTS_TABLE.format(table="events")
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def create_private(path: Path) -> None:
    """Create `path` as an empty file only its owner may read or write, unless it exists (or
    names no file: SQLite's `:memory:`)."""
    if str(path) == ":memory:":
        return
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def narrow_modes(path: Path) -> None:
    """Take group and other access away from the database and its side files."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot make %s readable by its owner only: %s", file, exc)


def key_secret(conn: sqlite3.Connection) -> bytes:
    """The store's key id secret, made now if the store has none; the first process to
    make one wins, every other reads that one."""
    conn.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
        (_SECRET_NAME, secrets.token_bytes(32)),
    )
    (secret,) = conn.execute("SELECT value FROM meta WHERE name = ?", (_SECRET_NAME,)).fetchone()
    return bytes(secret)


def upgrade(conn: sqlite3.Connection, path: Path, secret: bytes) -> None:
    """Bring a store whose schema is older than `SCHEMA_VERSION` up to it; the tables of the
    current schema exist already (created with `IF NOT EXISTS`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have upgraded the file while this one waited for the lock.
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        rewritten = 0
        if version < 2:
            conn.execute("PRAGMA secure_delete = ON")
            rewritten = _rewrite_sources(conn, secret)
        if version < 3:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(totals)")}
            if "unroutable" not in columns:
                conn.execute("ALTER TABLE totals ADD COLUMN unroutable INTEGER NOT NULL DEFAULT 0")
        if version < 4:
            for index in _DROPPED_INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {index}")
        if version < 5:
            _add_message_keys(conn, path, secret)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA secure_delete = OFF")
    if version >= 2:
        return
    narrow_modes(path)
    if rewritten:
        # The old pages live on in the write-ahead log until a checkpoint copies the new ones
        # over them; TRUNCATE also empties the log file.
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            logger.warning(
                "%s: another process is reading; old write keys stay in %s-wal until the "
                "next checkpoint",
                path,
                path.name,
            )
        logger.info("%s: %d events now name their source by key id", path, rewritten)


def _add_message_keys(conn: sqlite3.Connection, path: Path, secret: bytes) -> None:
    """Copy the events into a table with `message_key` and without the unique messageId (a
    column's UNIQUE cannot be dropped in place), keeping every row id and the last one given."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "message_key" in columns:
        return
    began = time.monotonic()
    (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    if count:
        logger.warning(
            "%s: copying %d events to the current layout, once (about 30 s a million events; "
            "the file needs room for a copy)",
            path,
            count,
        )
    keys = MessageKeys(secret)
    conn.create_function(
        "trackline_message_key", 1, lambda message_id: keys(str(message_id)), deterministic=True
    )
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    conn.execute(_EVENTS_TABLE.format(table="events_next"))
    copied = conn.execute(
        f"INSERT INTO events_next ({_EVENT_COLUMNS}, message_key) "
        f"SELECT {_EVENT_COLUMNS}, trackline_message_key(message_id) FROM events ORDER BY id"
    ).rowcount
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_next RENAME TO events")
    if found is not None:
        # Ids stay above every id ever given, also those of events cleared since.
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", found)
    if copied:
        logger.info(
            "%s: %d events copied to the current layout in %.1f s",
            path,
            copied,
            time.monotonic() - began,
        )


def _rewrite_sources(conn: sqlite3.Connection, secret: bytes) -> int:
    conn.create_function(
        "trackline_key_id", 1, lambda source: key_id(secret, str(source)), deterministic=True
    )
    cursor = conn.execute("UPDATE events SET source = trackline_key_id(source)")
    counts = conn.execute(
        "SELECT type, trackline_key_id(source), sum(n) FROM event_counts GROUP BY 1, 2"
    ).fetchall()
    conn.execute("DELETE FROM event_counts")
    conn.executemany("INSERT INTO event_counts (type, source, n) VALUES (?, ?, ?)", counts)
    return cursor.rowcount
