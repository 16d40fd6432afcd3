"""The PostgreSQL store: what holds across processes sharing one database (each store here has
its own connections, as a process would), schema versions, partitions and retention, and
failures: locks, killed connections, a database gone or silent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from tests.collector.conftest import message
from tests.support.faultproxy import BlackHole, FaultProxy
from trackline.collector.ingest import Envelope, Row, process
from trackline.collector.live import Lagged, LiveEvent
from trackline.collector.store import (
    EventQuery,
    ReadTooCostly,
    RowsRefused,
    StorageError,
    WriteResult,
    open_store,
)
from trackline.collector.store.postgres import PostgresStore
from trackline.collector.store.postgres import reads as postgres_reads
from trackline.collector.store.postgres.schema import MIGRATIONS, SCHEMA, SPAN, VERSION


def rows(*numbers: int, source: str = "key", **fields: object) -> list[Row]:
    envelope = Envelope([message(n, **fields) for n in numbers])
    return process(envelope, source=source, received_at=datetime.now(UTC)).rows


@pytest.fixture
def stores(pg_url: str) -> Iterator[list[PostgresStore]]:
    """Stores to open on the test's database; all closed at the end."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def open_pg(stores: list[PostgresStore], url: str, **options: object) -> PostgresStore:
    store = PostgresStore(url, **{"lock_timeout": 1.0, **options})  # type: ignore[arg-type]
    stores.append(store)
    return store


def sql(url: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def ids(store: PostgresStore, **filters: object) -> list[str]:
    found = orjson.loads(store.events(EventQuery(limit=1000, **filters)))  # type: ignore[arg-type]
    return [event["messageId"] for event in found]


def test_processes_share_dedupe_and_counts(pg_url: str, stores: list[PostgresStore]) -> None:
    """Two stores writing the same messageIds at once, from many threads: each is stored
    once, and both see the same exact counts of events and duplicates."""
    first, second = open_pg(stores, pg_url), open_pg(stores, pg_url)
    results: list[WriteResult] = []
    lock = threading.Lock()

    def send(store: PostgresStore, start: int) -> None:
        for n in range(start, start + 200, 20):
            result = store.write(rows(*range(n, n + 20)))
            with lock:
                results.append(result)

    threads = [
        threading.Thread(target=send, args=(store, start))
        for store in (first, second)
        for start in (0, 100)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Four senders over ids 0-299: 0-99 once, 100-199 by all four, 200-299 twice.
    sent = sum(r.accepted + r.duplicates for r in results)
    accepted = sum(r.accepted for r in results)
    assert (sent, accepted) == (800, 300)
    for store in (first, second):
        stats = store.stats()
        assert (stats.events, stats.duplicates) == (300, 500)
    assert sorted(ids(second)) == sorted(f"message-{n}" for n in range(300))


def test_live_events_reach_every_process(pg_url: str, stores: list[PostgresStore]) -> None:
    """A live subscriber of one store receives what another store commits, with the ids the
    read API shows, and its own store's events once each."""
    watcher, writer = open_pg(stores, pg_url), open_pg(stores, pg_url)
    assert watcher.listening.wait(5)

    async def scenario() -> list[LiveEvent]:
        subscription = watcher.hub.subscribe()
        await asyncio.to_thread(writer.write, rows(1, 2))
        await asyncio.to_thread(watcher.write, rows(3))
        await asyncio.to_thread(writer.write, rows(2, 4))
        received: list[LiveEvent] = []
        while len(received) < 4:
            news = await subscription.next(timeout=5.0)
            assert isinstance(news, list)
            assert news, "no live event within 5 s"
            received += news
        subscription.close()
        return received

    received = asyncio.run(scenario())
    by_id = {orjson.loads(event.body)["messageId"]: event.id for event in received}
    assert sorted(by_id) == [f"message-{n}" for n in (1, 2, 3, 4)]
    stored = {
        e["message"]["messageId"]: e["id"]
        for e in orjson.loads(watcher.events(EventQuery(), meta=True))
    }
    assert by_id == stored


def test_a_lost_listening_connection_is_a_gap_then_listening_resumes(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """When the connection that hears other processes is killed, subscribers are told they
    may have missed events, and events of other processes arrive again afterwards."""
    watcher, writer = open_pg(stores, pg_url), open_pg(stores, pg_url)
    assert watcher.listening.wait(5)

    async def scenario() -> list[object]:
        subscription = watcher.hub.subscribe()
        sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'trackline-collector listener'",
        )
        seen: list[object] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(news, list) and news for news in seen):
            assert time.monotonic() < deadline, seen
            if any(isinstance(news, Lagged) for news in seen):
                await asyncio.to_thread(writer.write, rows(len(seen)))
            seen.append(await subscription.next(timeout=0.5))
        subscription.close()
        return seen

    seen = asyncio.run(scenario())
    assert any(isinstance(news, Lagged) for news in seen)


def test_reopening_keeps_events_counters_and_dedupe(pg_url: str) -> None:
    """Everything lives in the database: a new store on it continues where the last stopped."""
    with PostgresStore(pg_url) as first:
        first.write(rows(1, 2), rejected=1)
    with PostgresStore(pg_url) as second:
        assert second.write(rows(2, 3)) == WriteResult(1, 1)
        stats = second.stats()
    assert (stats.events, stats.duplicates, stats.rejected) == (3, 1, 1)


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    """A database migrated by a newer trackline is refused with a message saying so."""
    PostgresStore(pg_url).close()
    sql(pg_url, f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (%s)", VERSION + 1)
    with pytest.raises(StorageError, match=f"schema version {VERSION + 1}, newer"):
        PostgresStore(pg_url)


def test_an_older_schema_is_migrated_at_start(pg_url: str) -> None:
    """A database written by the first schema (events only, no delivery jobs) gets the later
    migrations once at start: its events stay, and jobs can be queued for them afterwards."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.schema_migrations (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[1])
        conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations VALUES (1)")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.events_0 PARTITION OF {SCHEMA}.events FOR VALUES FROM (0) "
            f"TO ({SPAN})"
        )
        conn.execute(f"CREATE UNIQUE INDEX events_0_message_id ON {SCHEMA}.events_0 (message_id)")
        conn.execute(f"INSERT INTO {SCHEMA}.partitions (number, opened_at) VALUES (0, now())")
        (old,) = rows(1)
        conn.execute(
            f"INSERT INTO {SCHEMA}.events VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s)", old
        )
        conn.execute(f"INSERT INTO {SCHEMA}.event_counts VALUES (0, 'track', 'key', 1)")
    with PostgresStore(pg_url) as store:
        assert store.write(rows(1, 2), routes=[("Hook",), ("Hook",)]) == WriteResult(1, 1)
        assert store.stats().events == 2
        assert [job.message_id for job in store.claim("Hook", 10, 60.0)] == ["message-2"]
        assert store.replay("Hook") == 1  # message-1, stored before the jobs existed
    versions = sql(pg_url, f"SELECT version FROM {SCHEMA}.schema_migrations ORDER BY 1")
    assert [v for (v,) in versions] == list(range(1, VERSION + 1))


def backdate(url: str, column: str, number: int, hours: float) -> None:
    sql(
        url,
        f"UPDATE {SCHEMA}.partitions SET {column} = {column} - make_interval(hours => %s) "
        "WHERE number = %s",
        hours,
        number,
    )


def test_dedupe_holds_across_a_partition_switch(pg_url: str, stores: list[PostgresStore]) -> None:
    """Once the partition being written is a day old, writing moves to the next one; a
    messageId stored in the one before is still a duplicate there."""
    store = open_pg(stores, pg_url)
    store.write(rows(1, 2))
    backdate(pg_url, "opened_at", 0, 25)
    assert store.maintain()
    assert store.write(rows(2, 3)) == WriteResult(1, 1)
    stored = orjson.loads(store.events(EventQuery(), meta=True))
    partitions = {e["message"]["messageId"]: e["id"] // SPAN for e in stored}
    assert partitions == {"message-1": 0, "message-2": 0, "message-3": 1}
    assert store.stats().events == 3


def test_retention_drops_whole_partitions(pg_url: str, stores: list[PostgresStore]) -> None:
    """With a retention, a partition whose last event is older than it is dropped whole: its
    events leave the reads and the counts; newer partitions stay."""
    store = open_pg(stores, pg_url, retention=3600.0)
    store.write(rows(1, 2))
    backdate(pg_url, "opened_at", 0, 25)
    assert store.maintain()  # switches to partition 1
    store.write(rows(3))
    assert store.maintain()  # partition 0 closed just now: kept
    assert sorted(ids(store)) == ["message-1", "message-2", "message-3"]
    backdate(pg_url, "closed_at", 0, 2)
    assert store.maintain()
    assert ids(store) == ["message-3"]
    assert store.stats().events == 1
    tables = sql(pg_url, "SELECT to_regclass(%s)", f"{SCHEMA}.events_0")
    assert tables == [(None,)]


def test_a_held_lock_fails_the_write_within_its_deadline_then_recovers(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """While another session holds the events table locked, a write fails with StorageError
    soon after the lock timeout, never hangs, stores nothing; afterwards writes succeed."""
    store = open_pg(stores, pg_url, lock_timeout=0.5)
    with psycopg.connect(pg_url) as holder:
        holder.execute(f"LOCK TABLE {SCHEMA}.events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StorageError, match="lock"):
            store.write(rows(1))
        assert time.monotonic() - started < 0.5 + 5.0
        assert not store.healthy
        holder.rollback()
    assert store.write(rows(1)) == WriteResult(1, 0)
    assert store.healthy
    assert store.stats().events == 1


def test_killed_connections_are_replaced(pg_url: str, stores: list[PostgresStore]) -> None:
    """pg_terminate_backend on every connection of the store: at most the next write fails
    (503, nothing stored), then the store carries on by itself."""
    store = open_pg(stores, pg_url)
    store.write(rows(1))
    store.stats()
    killed = sql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert len(killed) >= 3  # writer, listener, reader
    outcomes = []
    for n in (2, 3):
        try:
            outcomes.append(store.write(rows(n)))
        except StorageError:
            outcomes.append(None)
    assert outcomes[-1] == WriteResult(1, 0)
    assert store.stats().events == 1 + sum(1 for outcome in outcomes if outcome is not None)


def proxied(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{urlsplit(proxy.url).port}").geturl()


def test_a_database_gone_fails_writes_at_once_and_recovery_needs_no_restart(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """With PostgreSQL unreachable, writes and reads fail with StorageError at once; when it
    is back, the same store writes again."""
    port = urlsplit(pg_url).port
    with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
        store = open_pg(stores, proxied(pg_url, proxy))
        store.write(rows(1))
        proxy.down()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StorageError):
                store.write(rows(2))
            assert time.monotonic() - started < 3.0
        with pytest.raises(StorageError):
            store.stats()
        proxy.up()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert store.write(rows(2)) == WriteResult(1, 0)
                break
            except StorageError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert store.stats().events == 2


def test_a_silent_database_is_given_up_on_at_the_deadline(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """A query swallowed by the network (no answer, no error) fails at the store's deadline
    instead of hanging, and the next write opens a fresh connection."""
    port = urlsplit(pg_url).port
    with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
        store = open_pg(stores, proxied(pg_url, proxy), lock_timeout=0.5)
        store.write(rows(1))
        with proxy.toxic(BlackHole(times=1)):
            started = time.monotonic()
            with pytest.raises(StorageError):
                store.write(rows(2))
            took = time.monotonic() - started
        assert took < 0.5 + 10.0  # the collector's request deadline
        assert store.write(rows(2)) == WriteResult(1, 0)


def test_an_unreachable_database_at_start_is_a_clear_error(pg_url: str) -> None:
    """Opening a store on a server that refuses connections raises StorageError naming the
    database without its password."""
    url = "postgresql://someone:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError, match=r"someone:\*\*\*@127\.0\.0\.1:1/nowhere") as caught:
        open_store(url, lock_timeout=0.5)
    assert "hunter2" not in str(caught.value)


def test_every_process_shares_one_key_secret(pg_url: str, stores: list[PostgresStore]) -> None:
    """The key id secret is made once per database and kept: every store on it, now and
    after a restart, keys key ids alike."""
    first, second = open_pg(stores, pg_url), open_pg(stores, pg_url)
    assert len(first.key_secret) == 32
    assert first.key_secret == second.key_secret
    first.close()
    with PostgresStore(pg_url) as again:
        assert again.key_secret == second.key_secret


def test_rows_postgres_cannot_hold_fail_their_request_alone(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """Requests committed together, two of them with text PostgreSQL cannot take (a NUL, an
    unpaired surrogate): those fail with RowsRefused, the others are stored, and the store
    stays healthy. Ingest refuses a NUL in an indexed field, so that row is made past it, as
    a row reaching the store by another route would be."""
    store = open_pg(stores, pg_url)
    poisoned = [[rows(90)[0]._replace(user_id="a\x00b")], rows(91, source="\ud800")]

    async def scenario() -> list[WriteResult | BaseException]:
        futures = [store.submit(rows(n)) for n in range(5)]
        futures.insert(2, store.submit(poisoned[0]))
        futures.insert(4, store.submit(poisoned[1]))
        return list(await asyncio.gather(*futures, return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes.pop(4), RowsRefused)
    assert isinstance(outcomes.pop(2), RowsRefused)
    assert outcomes == [WriteResult(1, 0)] * 5
    assert store.stats().events == 5
    assert store.healthy


def test_a_listing_comes_in_pieces(pg_url: str, stores: list[PostgresStore]) -> None:
    """A large listing is handed over in pieces that join into the whole JSON array."""
    store = open_pg(stores, pg_url)
    for start in range(0, 600, 200):
        store.write(rows(*range(start, start + 200), properties={"pad": "x" * 400}))
    pieces = list(store.event_pieces(EventQuery(limit=1000)))
    assert len(pieces) > 2
    found = orjson.loads(b"".join(pieces))
    assert [event["messageId"] for event in found] == [f"message-{n}" for n in range(599, -1, -1)]


def test_a_read_past_its_budget_is_too_costly(
    pg_url: str, stores: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing whose database work outlasts the read budget stops with ReadTooCostly, and
    the store reads on afterwards."""
    store = open_pg(stores, pg_url)
    store.write(rows(*range(2000), properties={"pad": "y" * 2000}))
    monkeypatch.setattr(postgres_reads, "READ_BUDGET_SECONDS", 0.001)
    with pytest.raises(ReadTooCostly):
        store.events(EventQuery(q="no such text anywhere", limit=10))
    monkeypatch.undo()
    assert store.events(EventQuery(q="message-1999", limit=10)).count(b"messageId") == 1
