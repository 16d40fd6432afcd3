"""Delivery jobs on PostgreSQL across processes (each store here has its own connections, as a
process would; some tests run real processes): one claim at a time per job, leases in the
database, jobs committed late below a claimer's floor, dead letters dropped with retention.
The rules every engine keeps are in tests/collector/store/test_jobs_contract.py."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from tests.collector.store.conftest import rows
from tests.collector.test_postgres_store import backdate, open_pg, sql
from tests.collector.test_postgres_store import stores as stores  # the fixture
from trackline.collector.store import Job, Outcome, Settlement, order_key
from trackline.collector.store.postgres import PostgresStore
from trackline.collector.store.postgres.schema import SCHEMA

LEASE = 60.0
#: A worker that claims ten jobs under a 1 s lease and takes a minute over each.
SLOW = ("--lease", "1.0", "--batch", "10", "--work", "60")


def counts(store: PostgresStore, name: str = "Hook") -> tuple[int, int, int, int]:
    for found in store.destination_counts():
        if found.name == name:
            return found.pending, found.retrying, found.delivered, found.failed
    return 0, 0, 0, 0


def test_processes_claiming_at_once_never_share_a_job(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """Three stores claim one destination's 600 jobs from six threads at once: every job is
    handed out exactly once, and each settlement counts once."""
    first = open_pg(stores, pg_url)
    first.write(rows(*range(600)), routes=[("Hook",)] * 600)
    others = [open_pg(stores, pg_url) for _ in range(2)]
    claimed: list[Job] = []
    lock = threading.Lock()

    def work(store: PostgresStore) -> None:
        while True:
            jobs = store.claim("Hook", 7, LEASE)
            if not jobs:
                return
            with lock:
                claimed.extend(jobs)
            assert store.settle([Settlement(job, Outcome.DELIVERED) for job in jobs]) == len(jobs)

    threads = [threading.Thread(target=work, args=(s,)) for s in [first, *others] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(collections.Counter(job.id for job in claimed).values()) == [1] * 600
    assert counts(first) == (0, 0, 600, 0)


def test_a_job_committed_late_below_the_floor_is_still_claimed(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """A transaction that took its ids before others and commits after them (another process,
    slow): its job has a lower id than jobs already delivered, and is claimed all the same."""
    store = open_pg(stores, pg_url)
    store.write(rows(1), routes=[("Hook",)])  # the destination exists
    store.settle([Settlement(j, Outcome.DELIVERED) for j in store.claim("Hook", 10, LEASE)])
    ((destination,),) = sql(pg_url, f"SELECT id FROM {SCHEMA}.destinations")
    with psycopg.connect(pg_url) as slow:
        slow.execute("SELECT pg_current_xact_id()")
        (low,) = slow.execute(f"SELECT nextval('{SCHEMA}.event_blocks')").fetchone() or (0,)
        store.write(rows(2, 3), routes=[("Hook",)] * 2)
        for _ in range(2):  # the floor moves past `low` (twice: it is trusted only later)
            jobs = store.claim("Hook", 10, LEASE)
            store.settle([Settlement(job, Outcome.DELIVERED) for job in jobs])
        (late,) = rows(4)
        slow.execute(
            f"INSERT INTO {SCHEMA}.events VALUES (%s, {', '.join(['%s'] * 9)})", (low, *late)
        )
        slow.execute(
            f"INSERT INTO {SCHEMA}.jobs VALUES (%s, %s, %s, %s)",
            (destination, low, low, order_key(late.user_id, None)),
        )
        slow.commit()
    (job,) = store.claim("Hook", 10, LEASE)
    assert (job.id, job.message_id) == (low, "message-4")


def test_a_killed_processes_claims_come_back_after_their_lease(
    pg_url: str, stores: list[PostgresStore], tmp_path: Path
) -> None:
    """A worker process claims jobs under a 1 s lease and is killed with them: another
    process's claims skip them until the lease ends, then get them; nothing is lost."""
    store = open_pg(stores, pg_url)
    store.write(rows(*range(10)), routes=[("Hook",)] * 10)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.job_worker", pg_url, "Hook", str(log), *SLOW],
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while not log.exists() or not log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        worker.kill()
        worker.wait(10)
        killed_at = time.monotonic()
        assert store.claim("Hook", 10, LEASE) == []  # held by the dead worker's lease
        deadline = time.monotonic() + 10
        while not (jobs := store.claim("Hook", 10, LEASE)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert time.monotonic() - killed_at > 0.5
        assert sorted(job.message_id for job in jobs) == sorted(f"message-{n}" for n in range(10))
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=10)


def test_retention_ends_the_jobs_it_drops_as_failed(
    pg_url: str, stores: list[PostgresStore]
) -> None:
    """Jobs still owed when retention drops their partition are counted failed, with the
    reason as their destination's last error; a replayed job whose event went is failed when
    claimed. Nothing leaves the counts unexplained."""
    store = open_pg(stores, pg_url, retention=3600.0)
    store.write(rows(1, 2, 3), routes=[("Hook",)] * 3)
    first = store.claim("Hook", 1, LEASE)
    store.settle([Settlement(job, Outcome.DELIVERED) for job in first])
    backdate(pg_url, "opened_at", 0, 25)
    assert store.maintain()  # writing moves to partition 1
    assert store.replay("Hook", failed_only=False) == 1  # message-1, delivered: sent again
    backdate(pg_url, "closed_at", 0, 2)
    assert store.maintain()  # partition 0 (message-1..3 and their jobs) goes
    assert counts(store) == (1, 0, 1, 2)
    (hook,) = store.destination_counts()
    assert hook.last_error is not None
    assert "retention" in hook.last_error
    assert store.claim("Hook", 10, LEASE) == []  # the replayed job's event is gone
    assert counts(store) == (0, 0, 1, 3)
