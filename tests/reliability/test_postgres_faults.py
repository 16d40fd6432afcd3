"""Collectors on PostgreSQL under faults, settled by the ledger: collector processes killed
under load, PostgreSQL connections killed, PostgreSQL unreachable, a table locked for long.
Nothing acknowledged may be lost, nothing stored twice; while the database cannot commit,
answers are 503 with Retry-After, never 200, and never later than the request deadline."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
import urllib3

import trackline
from tests.collector.test_cli import Process
from tests.support.faultproxy import BlackHole, FaultProxy
from tests.support.ledger import Account, Ledger, PostgresCollectorStore
from trackline.collector import serve
from trackline.collector.store.postgres import PostgresStore

AUTH = {
    "Content-Type": "application/json",
    "Authorization": "Basic " + base64.b64encode(b"probe-key:").decode(),
}


def children(pid: int) -> list[int]:
    """The collector processes a `--processes` parent runs."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stop(process: Process) -> None:
    """SIGTERM to the parent stops every child gracefully; kill whatever outlives it."""
    if process.proc.poll() is not None:
        return
    kids = children(process.proc.pid)
    process.proc.send_signal(signal.SIGTERM)
    try:
        process.proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.proc.kill()
        process.proc.communicate(timeout=10)


@pytest.fixture
def collectors(pg_url: str) -> Iterator[Callable[[int], tuple[Process, str]]]:
    """Start `trackline collector --processes N` on the test's database."""
    started: list[Process] = []

    def start(count: int) -> tuple[Process, str]:
        args = ["collector", "--port", "0", "--db", pg_url, "--processes", str(count)]
        process = Process(args)
        started.append(process)
        url = process.wait_listening()
        deadline = time.monotonic() + 20
        while len(children(process.proc.pid)) < count or not healthy(url):
            assert time.monotonic() < deadline, "the collector processes did not start"
            time.sleep(0.05)
        return process, url

    yield start
    for process in started:
        stop(process)


def healthy(url: str) -> bool:
    try:
        return urllib3.request("GET", url + "/healthz", retries=False, timeout=2).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def eventually_healthy(url: str, within: float) -> bool:
    """Whether `/healthz` answers 200 within `within` seconds."""
    deadline = time.monotonic() + within
    while not healthy(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class Producers:
    """Two threads tracking through one client until stopped."""

    def __init__(self, ledger: Ledger, client: trackline.Client) -> None:
        self._ledger = ledger
        self._client = client
        self._running = threading.Event()
        self._running.set()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while self._running.is_set():
            self._ledger.track_many(self._client, 20)
            time.sleep(0.01)

    def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join()


def patient_client(ledger: Ledger, url: str) -> trackline.Client:
    return trackline.Client(
        "fault-key",
        host=url,
        on_error=ledger.on_error,
        workers=4,
        flush_at=50,
        flush_interval=0.05,
        backoff_base=0.02,
        backoff_cap=0.2,
        # Outages here last seconds: the budget is delivery_timeout, not a count.
        max_retries=1000,
        timeout=5.0,
    )


def kill_processes_under_load(
    collectors: Callable[[int], tuple[Process, str]], pg_url: str, ledger: Ledger, kills: int
) -> Account:
    parent, url = collectors(3)
    client = patient_client(ledger, url)
    producers = Producers(ledger, client)
    killed: list[int] = []
    try:
        for n in range(kills):
            time.sleep(0.4)
            alive = children(parent.proc.pid)
            victim = alive[n % len(alive)]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            deadline = time.monotonic() + 20
            while True:  # the parent starts a replacement
                now = children(parent.proc.pid)
                if len(now) == 3 and victim not in now:
                    break
                assert time.monotonic() < deadline, "no replacement process"
                time.sleep(0.05)
        time.sleep(0.4)
    finally:
        producers.stop()
    assert client.flush(30)
    client.shutdown(1)
    return ledger.settle(client, PostgresCollectorStore(pg_url))


def test_kill_9_of_collector_processes_under_load_loses_nothing(
    collectors: Callable[[int], tuple[Process, str]], pg_url: str, ledger: Ledger
) -> None:
    """Three collector processes share the port and the database; kill -9 of one of them,
    three times under client load: the parent replaces each, and every event is stored
    exactly once (a batch committed by a killed process and sent again is a duplicate)."""
    account = kill_processes_under_load(collectors, pg_url, ledger, 3)
    account.assert_exact()
    assert not account.dropped
    assert account.stored > 500


@pytest.mark.slow
def test_many_kills_of_collector_processes_under_load_lose_nothing(
    collectors: Callable[[int], tuple[Process, str]], pg_url: str, ledger: Ledger
) -> None:
    """Thirty kill -9 of collector processes under load (about half a minute)."""
    account = kill_processes_under_load(collectors, pg_url, ledger, 30)
    account.assert_exact()
    assert not account.dropped


def terminate_backends(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_killed_postgres_connections_under_load_lose_nothing(
    collectors: Callable[[int], tuple[Process, str]], pg_url: str, ledger: Ledger
) -> None:
    """pg_terminate_backend on every connection of two collector processes, five times
    under load: requests caught in it get 503 and are sent again, the collectors reconnect
    by themselves, and every event is stored exactly once."""
    _, url = collectors(2)
    client = patient_client(ledger, url)
    producers = Producers(ledger, client)
    try:
        for _ in range(5):
            time.sleep(0.3)
            assert terminate_backends(pg_url) > 0
        time.sleep(0.3)
    finally:
        producers.stop()
    assert client.flush(30)
    client.shutdown(1)
    account = ledger.settle(client, PostgresCollectorStore(pg_url))
    account.assert_exact()
    assert not account.dropped
    # Each probe reaches one of the two processes (the kernel picks); a process whose
    # connection was killed last reconnects on its next write or probe, within its backoff.
    assert all(eventually_healthy(url, within=15.0) for _ in range(4))


def post_probe(url: str) -> urllib3.BaseHTTPResponse:
    body = orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "Probe"}]})
    return urllib3.request("POST", url + "/v1/batch", body=body, headers=AUTH, retries=False)


def test_postgres_unreachable_under_load_is_503_then_recovers(pg_url: str, ledger: Ledger) -> None:
    """PostgreSQL unreachable (its port closed, connections reset) while a client sends:
    every answer meanwhile is 503 with Retry-After and /healthz says 503; once it is back
    the same collector stores again, and the client's retries store everything once."""
    parts = urlsplit(pg_url)
    with FaultProxy(f"http://127.0.0.1:{parts.port}") as proxy:
        via_proxy = parts._replace(
            netloc=f"{parts.username}@127.0.0.1:{urlsplit(proxy.url).port}"
        ).geturl()
        with serve(via_proxy, lock_timeout=0.5) as collector:
            client = patient_client(ledger, collector.url)
            producers = Producers(ledger, client)
            try:
                time.sleep(0.3)
                proxy.down()
                time.sleep(0.3)
                for _ in range(3):
                    answer = post_probe(collector.url)
                    assert answer.status == 503
                    assert orjson.loads(answer.data)["code"] == "storage_unavailable"
                    assert int(answer.headers["Retry-After"]) > 0
                health = urllib3.request("GET", collector.url + "/healthz", retries=False)
                assert health.status == 503
                time.sleep(0.5)
                proxy.up()
                time.sleep(0.5)
            finally:
                producers.stop()
            assert client.flush(30)
            client.shutdown(1)
            assert client.stats.retries > 0
            account = ledger.settle(client, PostgresCollectorStore(pg_url))
            assert post_probe(collector.url).status == 200
    account.assert_exact()
    assert not account.dropped


def test_a_silent_postgres_is_503_within_the_request_deadline(pg_url: str) -> None:
    """PostgreSQL behind a network that swallows every query (no answer, no error): requests
    get 503 with Retry-After before their deadline (lock timeout plus 10 s) instead of
    hanging, and once the network carries again the same collector stores."""
    lock_timeout = 0.5
    parts = urlsplit(pg_url)
    with FaultProxy(f"http://127.0.0.1:{parts.port}") as proxy:
        via_proxy = parts._replace(
            netloc=f"{parts.username}@127.0.0.1:{urlsplit(proxy.url).port}"
        ).geturl()
        with serve(via_proxy, lock_timeout=lock_timeout) as collector:
            assert post_probe(collector.url).status == 200
            with proxy.toxic(BlackHole()):
                started = time.monotonic()
                answer = post_probe(collector.url)
                took = time.monotonic() - started
            assert answer.status == 503
            assert int(answer.headers["Retry-After"]) > 0
            assert took < lock_timeout + 10.0
            deadline = time.monotonic() + 10
            while post_probe(collector.url).status != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_a_long_lock_is_503_within_the_request_deadline(pg_url: str) -> None:
    """While another session holds the events table locked, a request is answered 503 with
    Retry-After soon after the lock timeout (well inside the request deadline, lock timeout
    plus 10 s), not left hanging; once the lock is gone the same request is stored."""
    lock_timeout = 0.5
    with serve(pg_url, lock_timeout=lock_timeout) as collector:
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE trackline.events IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = post_probe(collector.url)
            took = time.monotonic() - started
            assert answer.status == 503
            assert int(answer.headers["Retry-After"]) > 0
            assert took < lock_timeout + 10.0
            holder.rollback()
        assert post_probe(collector.url).status == 200


def deliver_with_kills(pg_url: str, tmp_path: Path, count: int, kills: int) -> None:
    """`count` jobs worked by three worker processes (tests/support/job_worker.py), one of them
    killed with SIGKILL and replaced `kills` times; returns once all are delivered, having
    checked that each was delivered and counted once and never claimed while held."""
    from tests.collector.store.conftest import rows

    with PostgresStore(pg_url) as store:
        for start in range(0, count, 500):
            numbers = range(start, min(count, start + 500))
            store.write(rows(*numbers), routes=[("Hook",)] * len(numbers))
        logs = [tmp_path / f"worker-{n}.log" for n in range(kills + 3)]
        command = [sys.executable, "-m", "tests.support.job_worker", pg_url, "Hook"]
        options = ["--lease", "0.5", "--batch", "20", "--work", "0.001"]
        workers = [subprocess.Popen([*command, str(log), *options]) for log in logs[:3]]
        try:
            for n in range(kills):
                time.sleep(0.3)
                workers[n].kill()
                workers[n].wait(10)
                workers.append(subprocess.Popen([*command, str(logs[n + 3]), *options]))
            deadline = time.monotonic() + 60
            while True:
                (hook,) = store.destination_counts()
                if hook.delivered == count:
                    break
                assert time.monotonic() < deadline, hook
                time.sleep(0.1)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                worker.wait(10)
        (hook,) = store.destination_counts()
        assert (hook.pending, hook.retrying, hook.delivered, hook.failed) == (0, 0, count, 0)
    started = {
        int(line.split()[0])
        for log in logs
        if log.exists()
        for line in log.read_text().split()[::2]
    }
    with psycopg.connect(pg_url) as conn:
        jobs = {job_id for (job_id,) in conn.execute("SELECT id FROM trackline.jobs")}
        delivered = conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM trackline.job_status "
            "WHERE state = 'delivered'"
        ).fetchone()
        # A claim taken while an earlier one held the job: its lease had not ended and no
        # settlement came between.
        (overlaps,) = conn.execute(
            "SELECT count(*) FROM (SELECT state, at, lag(state) OVER w AS before, "
            "lag(lease_until) OVER w AS held_until FROM trackline.job_status "
            "WINDOW w AS (PARTITION BY destination, job_id ORDER BY seq)) AS s "
            "WHERE state = 'claimed' AND before = 'claimed' AND at < held_until"
        ).fetchone() or (None,)
    assert started == jobs
    assert delivered == (count, count)
    assert overlaps == 0


def test_delivery_workers_killed_lose_no_job_and_never_share_one(
    pg_url: str, tmp_path: Path
) -> None:
    """Three worker processes claim and settle 2,000 jobs; kill -9 of one of them, four
    times: every job is delivered and counted exactly once, the killed workers' claims come
    back after their lease, and no job is claimed while another claim holds it."""
    deliver_with_kills(pg_url, tmp_path, 2000, 4)


@pytest.mark.slow
def test_many_killed_delivery_workers_lose_no_job(pg_url: str, tmp_path: Path) -> None:
    """The same with 20,000 jobs and thirty kills."""
    deliver_with_kills(pg_url, tmp_path, 20_000, 30)
