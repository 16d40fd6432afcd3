"""Retention on the SQLite store: events received longer ago than the retention are deleted,
with their outcomes and owed jobs, in chunks that take turns with the writes.

Time is controlled by what is written: events go in through the store's own write path with
an old or a recent `received_at`, against a retention of one day."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.collector.conftest import message
from tests.support.pages import walk
from trackline.collector.ingest import Envelope, Row, process
from trackline.collector.live import EventHub, LiveEvent
from trackline.collector.store import EventQuery, Outcome, Settlement, SQLiteStore
from trackline.collector.store.sqlite_jobs import SQLiteJobs
from trackline.collector.store.sqlite_retention import DROPPED_REASON, Retention

DAY = 86_400.0
OLD = datetime.now(UTC) - timedelta(days=3)
RECENT = datetime.now(UTC) - timedelta(hours=1)


def rows(numbers: Sequence[int], received: datetime, **fields: object) -> list[Row]:
    envelope = Envelope([message(n, **fields) for n in numbers])
    return process(envelope, source="key", received_at=received).rows


def message_ids(store: SQLiteStore) -> set[str]:
    return {item["messageId"] for item in orjson.loads(store.events(EventQuery(limit=1000)))}


def stored_count(path: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (n,) = conn.execute(sql).fetchone()
    return int(n)


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(db_path, lock_timeout=1.0, retention=DAY, retention_chunk_rows=7) as opened:
        yield opened


def test_old_events_go_and_recent_ones_stay(store: SQLiteStore) -> None:
    """A pass deletes every event received before the retention (over several chunks), and
    none received since."""
    store.write(rows(range(20), OLD))
    store.write(rows(range(100, 105), RECENT))
    assert store.expire() == 20
    assert message_ids(store) == {f"message-{n}" for n in range(100, 105)}
    assert store.event("message-3") is None
    assert store.expire() == 0


def test_a_pass_runs_when_the_store_opens(db_path: Path) -> None:
    """A store opened with a retention deletes what is already too old without being asked,
    before it commits its first write."""
    with SQLiteStore(db_path) as plain:
        plain.write(rows(range(3), OLD) + rows([9], RECENT))
    with SQLiteStore(db_path, retention=DAY, retention_period=3600.0) as store:
        store.write(rows([10], RECENT))
        assert message_ids(store) == {"message-9", "message-10"}


def test_outcomes_go_with_their_events(store: SQLiteStore, db_path: Path) -> None:
    """A delivered job's outcome and a dead letter go with their events; the destination's
    delivered and failed counts are history and stay."""
    store.write(rows([1, 2], OLD), routes=[("Sink",)] * 2)
    jobs = store.claim("Sink", 10, lease=60.0)
    assert len(jobs) == 2
    store.settle([Settlement(jobs[0], Outcome.DELIVERED), Settlement(jobs[1], Outcome.FAILED)])
    assert stored_count(db_path, "SELECT count(*) FROM outcomes") == 2
    store.expire()
    assert stored_count(db_path, "SELECT count(*) FROM outcomes") == 0
    assert store.deliveries("message-1") is None
    (sink,) = store.destination_counts()
    assert (sink.delivered, sink.failed, sink.pending) == (1, 1, 0)


def test_owed_jobs_end_failed_with_the_reason(store: SQLiteStore, db_path: Path) -> None:
    """Jobs still owed for a deleted event, pending or waiting for a retry, are counted failed
    per destination with the reason; a recent event's job stays owed."""
    routes = [("Sink", "Other")] * 3
    store.write(rows([1, 2], OLD) + rows([3], RECENT), routes=routes)
    claimed = store.claim("Sink", 1, lease=60.0)
    store.settle([Settlement(claimed[0], Outcome.RETRY, "timeout", retry_at=0.0)])
    store.expire()
    counts = {c.name: c for c in store.destination_counts()}
    assert (counts["Sink"].pending, counts["Sink"].retrying, counts["Sink"].failed) == (1, 0, 2)
    assert (counts["Other"].pending, counts["Other"].retrying, counts["Other"].failed) == (1, 0, 2)
    assert counts["Sink"].last_error == DROPPED_REASON
    assert stored_count(db_path, "SELECT count(*) FROM jobs") == 2
    assert [job.message_id for job in store.claim("Other", 10, lease=60.0)] == ["message-3"]


def test_a_late_settlement_of_a_dropped_job_changes_nothing(store: SQLiteStore) -> None:
    """A job claimed before its event was deleted counts failed once: its router's
    settlement afterwards finds no claim to end."""
    store.write(rows([1], OLD), routes=[("Sink",)])
    (job,) = store.claim("Sink", 1, lease=60.0)
    store.expire()
    assert store.settle([Settlement(job, Outcome.DELIVERED)]) == 0
    (sink,) = store.destination_counts()
    assert (sink.pending, sink.delivered, sink.failed) == (0, 0, 1)


def test_stats_count_only_the_events_still_stored(store: SQLiteStore) -> None:
    """As when PostgreSQL drops a partition: the per-type and per-source counts lose the
    deleted events (a type with none left is no longer listed); duplicates and rejected
    messages stay counted."""
    store.write(rows(range(4), OLD, type="page", name="Home"), rejected=2)
    store.write(rows(range(10, 13), RECENT))
    store.write(rows([10], RECENT))
    store.expire()
    stats = store.stats()
    assert stats.events == 3
    assert stats.by_type == {"track": 3}
    assert sum(stats.by_source.values()) == 3
    assert (stats.duplicates, stats.rejected) == (1, 2)


@pytest.mark.parametrize("ascending", [True, False])
def test_a_walk_during_deletion_never_repeats_an_event(store: SQLiteStore, ascending: bool) -> None:
    """Pages read while old events vanish between them hold each event once at most, and
    every recent event is on some page."""
    store.write(rows(range(30), OLD))
    store.write(rows(range(100, 110), RECENT))
    seen: list[str] = []
    for number, ids in enumerate(walk(store, EventQuery(limit=4, ascending=ascending)), 1):
        seen += ids
        if number == 2:
            store.expire()
    assert len(seen) == len(set(seen))
    assert {f"message-{n}" for n in range(100, 110)} <= set(seen)


class _GateHub(EventHub):
    """A hub that, on the writer thread as it publishes a commit, can hold the writer until
    released (`hold`), or note how many old events are still stored (`count_on_publish`)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.hold = False
        self.holding = threading.Event()
        self.release = threading.Event()
        self.count_on_publish = False
        self.old_left: list[int] = []

    @property
    def has_subscribers(self) -> bool:
        return True

    def publish(self, events: Sequence[LiveEvent]) -> None:
        counting = self.count_on_publish
        if self.hold:
            self.hold = False
            self.holding.set()
            assert self.release.wait(10.0)
        if counting:
            # Every event stored but the two recent ones (the held write's and this one).
            self.old_left.append(stored_count(self.path, "SELECT count(*) FROM events") - 2)
        super().publish(events)


def test_a_write_waits_behind_one_chunk_not_the_whole_pass(db_path: Path) -> None:
    """A write queued with a pass commits after the pass's first chunk, while most old events
    are still stored: chunks take turns with the group commits."""
    hub = _GateHub(db_path)
    with SQLiteStore(
        db_path, retention=DAY, retention_chunk_rows=10, retention_period=3600.0, hub=hub
    ) as store:
        store.expire()  # the pass at open is over: the next one is the one queued below
        store.write(rows(range(200), OLD))
        hub.hold = True
        gate = threading.Thread(target=store.write, args=(rows([500], RECENT),))
        gate.start()
        assert hub.holding.wait(10.0)

        async def queue_both_then_release() -> int:
            expired = store.expire_soon()
            written = store.submit(rows([501], RECENT))
            hub.count_on_publish = True
            hub.release.set()
            result = await written
            assert result.accepted == 1
            return await asyncio.wrap_future(expired)

        assert asyncio.run(queue_both_then_release()) == 200
        gate.join(10.0)
    assert hub.old_left == [190]


def test_a_replay_skips_events_deleted_while_it_chose_them(
    store: SQLiteStore, db_path: Path
) -> None:
    """Events the retention deletes between a replay's reading them and its queueing them
    get no job (one would never be claimed, nor ever deleted)."""
    store.write(rows([1, 2], OLD) + rows([3], RECENT))
    expired: list[int] = []

    def select_after_a_pass(body: str) -> bool:
        if not expired:
            expired.append(store.expire())
        return True

    assert store.replay("Sink", selects=select_after_a_pass) == 1
    assert expired == [2]
    assert stored_count(db_path, "SELECT count(*) FROM jobs") == 1
    (sink,) = store.destination_counts()
    assert sink.pending == 1


def test_passes_run_at_open_then_a_period_after_the_last_or_when_asked(db_path: Path) -> None:
    """The schedule, on a fake clock: a pass is due at once, then `period` seconds after the
    last one ended; asking makes one due at once."""
    SQLiteStore(db_path).close()
    now = [100.0]
    retention = Retention(DAY, period=60.0, monotonic=lambda: now[0])
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        assert retention.due()
        retention.step(conn, SQLiteJobs())
        assert not retention.due()
        assert retention.wait_seconds() == 60.0
        now[0] = 159.0
        assert not retention.due()
        now[0] = 160.0
        assert retention.due()
        retention.step(conn, SQLiteJobs())
        asked: concurrent.futures.Future[int] = concurrent.futures.Future()
        retention.request(asked)
        assert retention.due()
        assert retention.wait_seconds() == 0.0
        retention.step(conn, SQLiteJobs())
    assert asked.result(0) == 0
