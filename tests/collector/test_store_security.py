"""The SQLite store's part in security: files only their owner reads, a key id secret shared by
every process of a store, stores of schema 1 (raw keys in `source`) rewritten to key ids, and
one request's rows that SQLite refuses failing that request alone."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.collector.conftest import message
from trackline.collector.access import key_id
from trackline.collector.ingest import Envelope, Row, process
from trackline.collector.store import EventQuery, RowsRefused, SQLiteStore, WriteResult
from trackline.collector.store.sqlite_setup import SCHEMA_VERSION

RECEIVED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
#: The tables of schema 1 as the first release created them.
SCHEMA_1 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    user_id TEXT, anonymous_id TEXT, event TEXT, source TEXT NOT NULL,
    received_at TEXT NOT NULL, timestamp TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE event_counts (
    type TEXT NOT NULL, source TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, source)
) WITHOUT ROWID;
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1), duplicates INTEGER NOT NULL, rejected INTEGER NOT NULL
);
INSERT INTO totals VALUES (1, 0, 0);
PRAGMA user_version = 1;
"""
#: Short keys: their rows grow when rewritten and SQLite moves them, so only secure delete
#: keeps the old bytes from lingering in free space (without it, some are found below).
OLD_KEYS = ("tk-7", "ab-9x")
OLD_ROWS = 3000


def rows(*numbers: int, source: str = "~000000000000") -> list[Row]:
    envelope = Envelope([message(n) for n in numbers])
    return process(envelope, source=source, received_at=RECEIVED).rows


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_and_side_files_are_owner_only(tmp_path: Path) -> None:
    """Under a umask that lets everyone read (022), the database, its -wal and its -shm are
    created 0600."""
    db = tmp_path / "events.sqlite3"
    code = (
        "import os, sys; os.umask(0o022); from trackline.collector.store import SQLiteStore; "
        "from tests.collector.test_store_security import rows; "
        f"store = SQLiteStore({str(db)!r}); store.write(rows(1)); "
        "print(' '.join(oct(os.stat(p).st_mode & 0o777) for p in "
        f"({str(db)!r}, {str(db) + '-wal'!r}, {str(db) + '-shm'!r}))); store.close()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o600", "0o600", "0o600"]


def test_the_key_id_secret_is_shared_by_every_opener(tmp_path: Path) -> None:
    """Two stores open on one file (two collector processes) have the same secret; another
    file has another."""
    with SQLiteStore(tmp_path / "a.sqlite3") as first, SQLiteStore(tmp_path / "a.sqlite3") as again:
        assert len(first.key_secret) == 32
        assert first.key_secret == again.key_secret
        with SQLiteStore(tmp_path / "b.sqlite3") as other:
            assert other.key_secret != first.key_secret


def old_store(path: Path) -> None:
    """A schema 1 file, world-readable as the first release left it, with raw keys: two
    thirds of the events from the first key, one third from the second."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_1)
    conn.execute("BEGIN")
    for n in range(OLD_ROWS):
        (row,) = rows(n, source=OLD_KEYS[n % 3 == 2])
        conn.execute(f"INSERT INTO events VALUES (NULL, {', '.join('?' * len(row))})", row)
    conn.execute(
        "INSERT INTO event_counts VALUES ('track', ?, ?), ('track', ?, ?)",
        (OLD_KEYS[0], OLD_ROWS * 2 // 3, OLD_KEYS[1], OLD_ROWS // 3),
    )
    conn.execute("COMMIT")
    conn.close()
    path.chmod(0o644)


def test_a_schema_1_store_is_rewritten_to_key_ids(tmp_path: Path) -> None:
    """Opening a store an earlier release wrote replaces every raw key with its key id, in
    rows and counts; the old key bytes are gone from the files; the files become 0600."""
    db = tmp_path / "events.sqlite3"
    old_store(db)
    assert OLD_KEYS[0].encode() in db.read_bytes()
    with SQLiteStore(db) as store:
        ids = [key_id(store.key_secret, key) for key in OLD_KEYS]
        assert store.stats().by_source == {ids[0]: OLD_ROWS * 2 // 3, ids[1]: OLD_ROWS // 3}
        listed = store.events(EventQuery(source=ids[1], limit=10_000))
        assert listed.count(b'"messageId"') == OLD_ROWS // 3
        assert store.write(rows(OLD_ROWS, source=ids[1])) == WriteResult(1, 0)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {s for (s,) in conn.execute("SELECT source FROM events")} == set(ids)
    conn.close()
    for file in tmp_path.iterdir():
        for key in OLD_KEYS:
            assert key.encode() not in file.read_bytes(), file
        assert mode(file) & 0o077 == 0, file


def test_an_upgraded_store_opens_again_unchanged(tmp_path: Path) -> None:
    """The rewrite happens once: a second opening keeps the same ids and counts."""
    db = tmp_path / "events.sqlite3"
    old_store(db)
    with SQLiteStore(db) as store:
        first = store.stats()
    with SQLiteStore(db) as store:
        assert store.stats() == first


def test_rows_the_database_refuses_fail_their_request_alone(tmp_path: Path) -> None:
    """Requests committed in one group, one of them with a value SQLite cannot encode (an
    unpaired surrogate, as a key that slipped past every check would be): that request fails
    with RowsRefused, the others are stored."""
    with SQLiteStore(tmp_path / "events.sqlite3") as store:
        poisoned = rows(99, source="\ud800")

        async def scenario() -> list[WriteResult | BaseException]:
            futures = [store.submit(rows(n)) for n in range(5)]
            futures.insert(2, store.submit(poisoned))
            futures += [store.submit(rows(n)) for n in range(5, 10)]
            return list(await asyncio.gather(*futures, return_exceptions=True))

        outcomes = asyncio.run(scenario())
        assert isinstance(outcomes.pop(2), RowsRefused)
        assert outcomes == [WriteResult(1, 0)] * 10
        assert store.stats().events == 10
        assert store.healthy


def test_a_store_from_a_newer_release_is_still_refused(tmp_path: Path) -> None:
    """Schema versions above this release's are refused, as before."""
    db = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(Exception, match="newer trackline"):
        SQLiteStore(db)
