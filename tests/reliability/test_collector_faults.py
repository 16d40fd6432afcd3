"""The collector under faults (reliability research, table B2): storage taken by another
process, restarts under load, and answers that keep their latency; each settled by a ledger."""

from __future__ import annotations

import base64
import http.client
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import urllib3

import trackline
from tests.collector.test_cli import Process
from tests.support.faultproxy import FaultProxy
from tests.support.ledger import Account, CollectorStore, Ledger
from trackline.collector import RunningCollector

MakeClient = Callable[..., trackline.Client]


def test_keep_alive_requests_are_not_held_by_delayed_acks(collector: RunningCollector) -> None:
    """Twenty batches on one keep-alive connection are each answered well under the ~40 ms a
    Nagle and delayed-ACK stall adds to every answer written in two parts."""
    connection = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=5)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"key:").decode(),
    }
    took = []
    for n in range(20):
        body = orjson.dumps(
            {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": f"m-{n}"}]}
        )
        started = time.perf_counter()
        connection.request("POST", "/v1/batch", body, headers)
        answer = connection.getresponse()
        answer.read()
        took.append(time.perf_counter() - started)
        assert answer.status == 200
    connection.close()
    assert statistics.median(took) < 0.03, [f"{t * 1e3:.1f}" for t in took]


def test_s10_storage_locked_by_another_process_is_503_never_200(
    collector: RunningCollector,
    proxy: FaultProxy,
    store: CollectorStore,
    ledger: Ledger,
    ledger_client: MakeClient,
) -> None:
    """While another process holds the database's write lock, every request gets 503 with
    Retry-After, never a 200 for events it could not store; the client keeps them, and once
    the lock is gone they are all stored, once, with no restart."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        client = ledger_client(proxy.url, flush_at=10)
        ledger.track_many(client, 30)
        answer = urllib3.request(
            "POST", collector.url + "/v1/batch", body=b'{"batch":[]}', headers=AUTH_HEADERS
        )
        probe = urllib3.request(
            "POST",
            collector.url + "/v1/batch",
            body=orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}]}),
            headers=AUTH_HEADERS,
        )
        assert (probe.status, orjson.loads(probe.data)["code"]) == (503, "storage_unavailable")
        assert int(probe.headers["Retry-After"]) > 0
        assert answer.status == 200  # nothing to store needs no lock
        deadline = time.monotonic() + 5
        while client.stats.retries < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (client.stats.delivered, store.stored_ids()) == (0, [])
    finally:
        holder.communicate("\n", timeout=5)
    assert client.flush(10)
    account = ledger.settle(client, store)
    account.assert_exact()
    assert (account.stored, account.dropped) == (30, {})


#: Holds an exclusive lock on the SQLite file named by argv[1] until a line arrives on stdin.
HOLD_LOCK = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline(); "
    "c.execute('ROLLBACK')"
)
AUTH_HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Basic " + base64.b64encode(b"key:").decode(),
}


def restart_under_load(
    tmp_path: Path, ledger: Ledger, restarts: int, how: signal.Signals
) -> tuple[Account, list[float]]:
    """A collector process on a SQLite file behind a fault proxy; a client (two producer
    threads) keeps tracking while the process is stopped with `how` and started again
    `restarts` times. Returns the settled account and how long each stop took."""
    db = tmp_path / "events.sqlite3"
    store = CollectorStore(db)
    processes = [Process(["collector", "--port", "0", "--db", str(db)])]
    stop_times = []
    with FaultProxy(processes[0].wait_listening()) as proxy:
        client = trackline.Client(
            "restart-key",
            host=proxy.url,
            on_error=ledger.on_error,
            workers=2,
            flush_at=50,
            flush_interval=0.05,
            backoff_base=0.02,
            backoff_cap=0.2,
            # A restart takes a second or so: the retry budget is delivery_timeout, not a count.
            max_retries=1000,
            timeout=5.0,
        )
        producing = threading.Event()
        producing.set()

        def produce() -> None:
            while producing.is_set():
                ledger.track_many(client, 20)
                time.sleep(0.01)

        producers = [threading.Thread(target=produce) for _ in range(2)]
        try:
            for producer in producers:
                producer.start()
            for _ in range(restarts):
                time.sleep(0.3)
                running = processes[-1].proc
                started = time.monotonic()
                running.send_signal(how)
                running.communicate(timeout=15)
                stop_times.append(time.monotonic() - started)
                if how is signal.SIGTERM:
                    assert running.returncode == 0
                processes.append(Process(["collector", "--port", "0", "--db", str(db)]))
                proxy.retarget(processes[-1].wait_listening())
            time.sleep(0.3)
        finally:
            producing.clear()
            for producer in producers:
                producer.join()
        assert client.flush(15)
        client.shutdown(1)
    for process in processes:
        process.stop()
    account = ledger.settle(client, store)
    return account, stop_times


def test_s16_sigterm_under_client_load_loses_nothing_acknowledged(
    tmp_path: Path, ledger: Ledger
) -> None:
    """SIGTERM twice while a client sends: each stop finishes in-flight commits and exits 0
    in under 5 s; every event the client was told was stored is stored, the rest is resent
    after the restart, and nothing is stored twice or lost."""
    account, stop_times = restart_under_load(tmp_path, ledger, 2, signal.SIGTERM)
    account.assert_exact()
    assert not account.dropped
    assert account.stored > 500
    assert max(stop_times) < 5.0, stop_times


def test_s11_kill_9_under_client_load_loses_nothing_acknowledged(
    tmp_path: Path, ledger: Ledger
) -> None:
    """kill -9 twice while a client sends: a batch committed whose answer died with the
    process is resent and stored once (dedupe); nothing acknowledged is missing."""
    account, _ = restart_under_load(tmp_path, ledger, 2, signal.SIGKILL)
    account.assert_exact()
    assert not account.dropped
    assert account.stored > 500


@pytest.mark.slow
def test_s11_many_kills_under_client_load_lose_nothing(tmp_path: Path, ledger: Ledger) -> None:
    """Forty kill -9 and restarts under load (about a minute): zero lost, zero stored twice."""
    account, _ = restart_under_load(tmp_path, ledger, 40, signal.SIGKILL)
    account.assert_exact()
    assert not account.dropped
