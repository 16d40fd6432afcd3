"""The stores on their own: group commit, dedupe, counters, reads, failure and recovery. Tests
taking `storage` run against every engine (SQLite and PostgreSQL); the rest are SQLite's."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.collector.conftest import message
from tests.support.pages import walk
from tests.support.postgres import fresh_database
from trackline.collector.ingest import Envelope, Row, process
from trackline.collector.live import LiveEvent
from trackline.collector.store import (
    EventQuery,
    StorageError,
    Store,
    WriteResult,
    open_store,
    sqlite,
    sqlite_keys,
)
from trackline.collector.store import SQLiteStore as Storage
from trackline.collector.store.sqlite_setup import SCHEMA_VERSION


def rows(*numbers: int, source: str = "key", **fields: object) -> list[Row]:
    envelope = Envelope([message(n, **fields) for n in numbers])
    received = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    return process(envelope, source=source, received_at=received).rows


@pytest.fixture
def sqlite_storage(db_path: Path) -> Iterator[Storage]:
    with Storage(db_path, lock_timeout=0.1) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Store]:
    """An empty store of each engine."""
    if request.param == "sqlite":
        with Storage(db_path, lock_timeout=0.1) as opened:
            yield opened
        return
    with fresh_database() as url:
        opened = open_store(url, lock_timeout=1.0)
        try:
            yield opened
        finally:
            opened.close()


def test_rows_are_stored_once(storage: Store) -> None:
    """A messageId seen before is counted as a duplicate and not stored again."""
    assert storage.write(rows(1, 2)) == WriteResult(accepted=2, duplicates=0)
    assert storage.write(rows(2, 3)) == WriteResult(accepted=1, duplicates=1)
    assert storage.write(rows(4, 4)) == WriteResult(accepted=1, duplicates=1)
    assert storage.stats().events == 4
    assert storage.stats().duplicates == 2


def test_concurrent_requests_share_a_commit_and_keep_their_own_counts(storage: Store) -> None:
    """Requests grouped into one transaction each get their own accepted/duplicate counts;
    a messageId carried by two of them is credited to the first."""

    async def post_all() -> list[WriteResult]:
        futures = [
            storage.submit(rows(1, 2)),
            storage.submit(rows(2, 3), rejected=2),
            storage.submit(rows(4)),
        ]
        return list(await asyncio.gather(*futures))

    assert asyncio.run(post_all()) == [
        WriteResult(2, 0),
        WriteResult(1, 1),
        WriteResult(1, 0),
    ]
    stats = storage.stats()
    assert (stats.events, stats.duplicates, stats.rejected) == (4, 1, 2)


def test_stats_count_by_type_and_source(storage: Store) -> None:
    """/api/stats counts come from the stored rows, by type and by write key."""
    storage.write(rows(1, 2, source="a"))
    storage.write(rows(3, source="b", type="identify", event=None))
    stats = storage.stats()
    assert stats.by_type == {"track": 2, "identify": 1}
    assert stats.by_source == {"a": 2, "b": 1}


def test_events_are_newest_first_and_filtered(storage: Store) -> None:
    """Filters combine; results come newest first up to the limit."""
    storage.write(rows(1, 2, 3))
    storage.write(rows(4, event="Signed Up"))
    storage.write(rows(5, anonymousId="anon-5", properties={"plan": "100%_pro"}))

    def ids(**filters: object) -> list[str]:
        found = orjson.loads(storage.events(EventQuery(**filters)))  # type: ignore[arg-type]
        return [event["messageId"] for event in found]

    assert ids() == [f"message-{n}" for n in (5, 4, 3, 2, 1)]
    assert ids(limit=2) == ["message-5", "message-4"]
    assert ids(event="Signed Up") == ["message-4"]
    assert ids(user_id="user-2") == ["message-2"]
    assert ids(anonymous_id="anon-5") == ["message-5"]
    assert ids(type="identify") == []
    assert ids(q="100%_PRO") == ["message-5"]
    assert ids(q="%") == ["message-5"]
    assert ids(since="2026-11-28T15:00:00.000Z", user_id="user-1") == ["message-1"]
    assert ids(since="2026-11-28T15:00:00.001Z") == []


def test_one_event_by_message_id(storage: Store) -> None:
    """A stored message is found by its id, with its enrichment."""
    storage.write(rows(1))
    found = storage.event("message-1")
    assert found is not None
    assert orjson.loads(found)["receivedAt"] == "2026-11-28T15:00:00.000Z"
    assert storage.event("missing") is None


def test_clear_empties_the_store_and_the_counters(storage: Store) -> None:
    """clear() deletes every event, resets counts, and dedupe starts over."""
    storage.write(rows(1, 1, 2), rejected=3)
    assert storage.clear() == 2
    stats = storage.stats()
    assert (stats.events, stats.duplicates, stats.rejected, stats.by_type) == (0, 0, 0, {})
    assert storage.write(rows(1)) == WriteResult(1, 0)


def test_reopening_keeps_events_counters_and_dedupe(db_path: Path) -> None:
    """Everything lives in the file: a new Storage on it continues where the last one stopped."""
    with Storage(db_path) as first:
        first.write(rows(1, 2), rejected=1)
    with Storage(db_path) as second:
        assert second.write(rows(2, 3)) == WriteResult(1, 1)
        stats = second.stats()
    assert (stats.events, stats.duplicates, stats.rejected) == (3, 1, 1)


def test_locked_database_fails_the_write_then_recovers(
    sqlite_storage: Storage, db_path: Path
) -> None:
    """While another connection holds the write lock, writes fail with StorageError and store
    nothing; once it lets go, the next write succeeds without reopening anything."""
    storage = sqlite_storage
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="locked"):
            storage.write(rows(1))
        assert not storage.healthy
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert storage.stats().events == 0
    assert storage.write(rows(1)) == WriteResult(1, 0)
    assert storage.healthy


def test_closed_store_refuses_writes(db_path: Path) -> None:
    """After close() a write fails at once instead of waiting forever; close() is idempotent."""
    storage = Storage(db_path)
    storage.close()
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.write(rows(1))


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    """A file written by a newer trackline is not touched."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        Storage(db_path)


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a clear StorageError at open."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    with pytest.raises(StorageError):
        Storage(path)


def test_wal_mode(sqlite_storage: Storage, db_path: Path) -> None:
    """The file is in WAL mode, so readers never wait for the writer."""
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_subscribers_get_newly_stored_events(storage: Store) -> None:
    """A live subscriber receives each newly stored event once, with increasing ids;
    duplicates are not published again."""

    async def scenario() -> list[LiveEvent]:
        subscription = storage.hub.subscribe()
        await storage.submit(rows(1, 2))
        await storage.submit(rows(2, 3))
        received: list[LiveEvent] = []
        while len(received) < 3:
            news = await subscription.next(timeout=2.0)
            assert isinstance(news, list)
            assert news
            received += news
        subscription.close()
        return received

    received = asyncio.run(scenario())
    assert [orjson.loads(event.body)["messageId"] for event in received] == [
        "message-1",
        "message-2",
        "message-3",
    ]
    stored = {
        e["message"]["messageId"]: e["id"]
        for e in orjson.loads(storage.events(EventQuery(), meta=True))
    }
    assert {orjson.loads(event.body)["messageId"]: event.id for event in received} == stored


def test_requests_waiting_together_are_committed_together(db_path: Path) -> None:
    """Requests that queue up while the writer waits are written in one group, and a messageId
    two of them carry is credited to the first (the second counts it as a duplicate)."""
    with Storage(db_path, lock_timeout=5.0) as storage:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        async def scenario() -> list[WriteResult]:
            first = storage.submit(rows(1))
            await asyncio.sleep(0.05)  # the writer now waits for the lock with `first`
            queued = [storage.submit(rows(5, 6)), storage.submit(rows(6, 7))]
            await asyncio.sleep(0.05)
            other.execute("ROLLBACK")
            return list(await asyncio.gather(first, *queued))

        try:
            results = asyncio.run(scenario())
        finally:
            other.close()
    assert results == [WriteResult(1, 0), WriteResult(2, 0), WriteResult(1, 1)]


def test_row_ids_are_not_reused_after_a_clear(storage: Store) -> None:
    """Events stored after clear() get ids above every id handed out before, so a reader
    following ids never mistakes a new event for an old one."""
    storage.write(rows(1, 2))
    before = orjson.loads(storage.events(EventQuery(), meta=True))
    storage.clear()
    storage.write(rows(3))
    (after,) = orjson.loads(storage.events(EventQuery(), meta=True))
    assert after["id"] > max(event["id"] for event in before)


def test_a_schema_3_store_loses_its_random_key_indexes(db_path: Path) -> None:
    """A store written by the release before schema 4 (32 KB pages, indexes of userId and
    anonymousId) opens with its events, counters and dedupe, without those two indexes, and
    its user_id filter still answers; it keeps its page size."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA page_size = 32768")
    conn.execute("VACUUM")
    conn.close()
    with Storage(db_path) as old:
        old.write(rows(1, 2, anonymousId="anon-1"))
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE INDEX events_user_id ON events (user_id) WHERE user_id IS NOT NULL")
    conn.execute("CREATE INDEX events_anonymous_id ON events (anonymous_id)")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with Storage(db_path) as opened:
        assert opened.stats().events == 2
        assert opened.write(rows(2, 3)) == WriteResult(1, 1)
        listed = orjson.loads(opened.events(EventQuery(user_id="user-2")))
        assert [m["messageId"] for m in listed] == ["message-2"]
        assert len(orjson.loads(opened.events(EventQuery(anonymous_id="anon-1")))) == 2
    conn = sqlite3.connect(db_path)
    listed = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    indexes = {name for (name,) in listed}
    assert not indexes & {"events_user_id", "events_anonymous_id"}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 32768
    conn.close()


#: The events table of schemas 1 to 4: a unique messageId, no message_key.
SCHEMA_4_EVENTS = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    user_id TEXT, anonymous_id TEXT, event TEXT, source TEXT NOT NULL,
    received_at TEXT NOT NULL, timestamp TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX events_type ON events (type);
CREATE INDEX events_event ON events (event) WHERE event IS NOT NULL;
CREATE INDEX events_received_at ON events (received_at);
"""


def test_a_schema_4_store_gets_message_keys_and_keeps_its_events(db_path: Path) -> None:
    """A store from the release before schema 5 (messageId unique in its own index) opens with
    every event under its old id, found by messageId, deduplicated against, with new ids above
    the last one it ever gave (also of events cleared since), and without the unique index."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.executescript(SCHEMA_4_EVENTS)
    columns = ", ".join(Row._fields)
    marks = ", ".join("?" * len(Row._fields))
    conn.executemany(f"INSERT INTO events ({columns}) VALUES ({marks})", rows(1, 2, 3))
    conn.execute("DELETE FROM events WHERE message_id = 'message-3'")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with Storage(db_path) as opened:
        listed = orjson.loads(opened.events(EventQuery(ascending=True), meta=True))
        assert [(e["id"], e["message"]["messageId"]) for e in listed] == [
            (1, "message-1"),
            (2, "message-2"),
        ]
        found = opened.event("message-2")
        assert found is not None
        assert orjson.loads(found)["messageId"] == "message-2"
        assert opened.event("message-3") is None
        assert opened.write(rows(1, 4)) == WriteResult(1, 1)
        (newest, *_) = orjson.loads(opened.events(EventQuery(), meta=True))
        assert (newest["id"], newest["message"]["messageId"]) == (4, "message-4")
    conn = sqlite3.connect(db_path)
    indexes = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert "events_message_key" in indexes
    assert not any(name.startswith("sqlite_autoindex_events") for name in indexes)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_ids_whose_keys_collide_are_told_apart(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dedupe compares messageIds, not only their keys: with every id given the same key, new
    ids are stored, resent ones are duplicates, and each is found by its own id."""
    monkeypatch.setattr(sqlite_keys.MessageKeys, "__call__", lambda keys, message_id: 7)
    with Storage(db_path) as store:
        assert store.write(rows(1, 2)) == WriteResult(2, 0)
        assert store.write(rows(2, 3, 3)) == WriteResult(1, 2)
        for n in (1, 2, 3):
            found = store.event(f"message-{n}")
            assert found is not None
            assert orjson.loads(found)["messageId"] == f"message-{n}"
        assert store.stats().events == 3
        assert store.stats().duplicates == 2


def test_a_new_file_has_small_pages(sqlite_storage: Storage, db_path: Path) -> None:
    """New files use 2 KB pages: an event dirties fewer bytes of each index it enters."""
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 2048
    conn.close()


def test_counting_a_commit_reads_only_its_new_rows(sqlite_storage: Storage, db_path: Path) -> None:
    """The per-commit count of new rows seeks them by row id: a plan that walks an index
    reads the whole store at every commit."""
    from trackline.collector.store.sqlite import _COUNT_NEW_ROWS

    sqlite_storage.write(rows(*range(50)))
    select = _COUNT_NEW_ROWS.split("SELECT", 1)[1].split("ON CONFLICT")[0]
    conn = sqlite3.connect(db_path)
    plan = conn.execute(f"EXPLAIN QUERY PLAN SELECT {select}", (10,)).fetchall()
    conn.close()
    steps = " / ".join(str(step[3]) for step in plan)
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in steps, steps
    assert "INDEX" not in steps.replace("INTEGER PRIMARY KEY", ""), steps


def test_user_filters_page_through_windows_on_sqlite(
    sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No index serves `user_id` or `anonymous_id` on SQLite (schema 4): a page looks at a
    window of MAX_SCAN_ROWS row ids, and a walk that follows each page's next query reaches
    every match, newest first."""
    monkeypatch.setattr("trackline.collector.store.sqlite.MAX_SCAN_ROWS", 100)
    sqlite_storage.write(rows(*range(500)))
    ours = (9005, 9250, 9499)
    envelope = Envelope([message(n, userId="u-x", anonymousId="a-x") for n in ours])
    received = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    sqlite_storage.write(process(envelope, source="key", received_at=received).rows[:1])
    for part in (rows(1000 + n) for n in range(200)):
        sqlite_storage.write(part)
    sqlite_storage.write(process(envelope, source="key", received_at=received).rows[1:])
    for column in ("user_id", "anonymous_id"):
        query = EventQuery(**{column: column[0] + "-x"}, limit=10)
        pages = list(walk(sqlite_storage, query))
        assert pages[0] == ["message-9499", "message-9250"]  # the newest window only
        walked = [i for page in pages for i in page]
        assert walked == ["message-9499", "message-9250", "message-9005"]


def test_the_log_is_copied_into_the_file_off_the_writer(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the writer's own checkpoint set beyond reach, committed pages still reach the
    database file: the background checkpointer copies the log after commits."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_BYTES", 1 << 40)
    with Storage(db_path) as store:
        empty = db_path.stat().st_size
        for start in range(0, 2000, 100):
            store.write(rows(*range(start, start + 100)))
        deadline = time.monotonic() + 10
        while db_path.stat().st_size <= empty and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db_path.stat().st_size > empty
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.stat().st_size > 0
