"""`trackline collector` as a process: it prints where it listens, stops gracefully on
SIGTERM, and never loses what it acknowledged: not on SIGTERM, not on kill -9, not when the
disk is full."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.collector.conftest import Http, basic, message, stored_ids


class Process:
    """A collector subprocess and the URL it printed."""

    def __init__(self, args: list[str], preamble: str = "") -> None:
        code = f"{preamble}import sys; from trackline.cli import main; sys.exit(main({args!r}))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.url = ""

    def first_line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the collector printed nothing"
        return self.proc.stdout.readline().decode()

    def wait_listening(self) -> str:
        line = self.first_line()
        assert line.startswith("trackline collector listening on http://127.0.0.1:"), line
        self.url = line.split()[4]
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def launch(processes: list[Process], db: Path, *extra: str, preamble: str = "") -> Process:
    process = Process(["collector", "--port", "0", "--db", str(db), *extra], preamble)
    processes.append(process)
    return process


class Load:
    """Clients posting unique messages until told to stop or the collector goes away,
    remembering which messageIds were acknowledged with 200."""

    def __init__(self, url: str, workers: int = 4, batch: int = 50) -> None:
        self.url = url
        self.batch = batch
        self.acked: set[str] = set()
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self, worker: int) -> None:
        pool = urllib3.PoolManager(retries=False, timeout=10.0)
        n = 0
        while not self._stop.is_set():
            n += 1
            ids = [f"w{worker}-{n}-{i}" for i in range(self.batch)]
            body = orjson.dumps({"batch": [message(0, messageId=i) for i in ids]})
            try:
                answer = pool.request(
                    "POST", self.url + "/v1/batch", body=body, headers={"Authorization": basic("k")}
                )
            except urllib3.exceptions.HTTPError:
                return
            with self._lock:
                self.statuses.append(answer.status)
                if answer.status == 200:
                    self.acked.update(ids)

    def wait_for(self, acked: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acked:
            assert time.monotonic() < deadline, "the load did not get going"
            time.sleep(0.01)

    def finish(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def test_prints_its_url_serves_and_stops_on_sigterm(
    processes: list[Process], tmp_path: Path
) -> None:
    """The command prints the URL (port 0 picks a free one), serves the API, and on SIGTERM
    stops with exit code 0."""
    process = launch(processes, tmp_path / "events.sqlite3")
    http = Http(process.wait_listening())
    assert http.post("/v1/batch", {"batch": [message(1)]}).json["accepted"] == 1
    process.proc.send_signal(signal.SIGTERM)
    out, err = process.proc.communicate(timeout=15)
    assert process.proc.returncode == 0, err
    assert b"stopped" in out
    assert stored_ids(tmp_path / "events.sqlite3") == {"message-1"}


def test_retention_on_sqlite_deletes_old_events_at_start(
    processes: list[Process], tmp_path: Path
) -> None:
    """`--retention 1d` with a SQLite file starts, and its first pass (at start) deletes the
    events received longer ago; newer ones stay."""
    from datetime import UTC, datetime, timedelta

    from trackline.collector.ingest import Envelope, process
    from trackline.collector.store import SQLiteStore

    db = tmp_path / "events.sqlite3"
    with SQLiteStore(db) as store:
        old = datetime.now(UTC) - timedelta(days=2)
        store.write(process(Envelope([message(1), message(2)]), source="k", received_at=old).rows)
        store.write(process(Envelope([message(3)]), source="k", received_at=datetime.now(UTC)).rows)
    running = launch(processes, db, "--retention", "1d")
    http = Http(running.wait_listening())
    deadline = time.monotonic() + 10.0
    while http.get("/api/stats").json["events"] != 1:
        assert time.monotonic() < deadline, "the old events were not deleted"
        time.sleep(0.05)
    assert stored_ids(db) == {"message-3"}


def test_python_dash_m_runs_it_too(tmp_path: Path) -> None:
    """`python -m trackline.collector` is the same command."""
    proc = subprocess.run(
        [sys.executable, "-m", "trackline.collector", "--help"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"--write-key" in proc.stdout


def test_sigterm_under_load_loses_nothing_acknowledged(
    processes: list[Process], tmp_path: Path
) -> None:
    """SIGTERM while four clients post: in-flight requests finish, the process exits 0, and
    every messageId answered 200 is in the database."""
    db = tmp_path / "events.sqlite3"
    process = launch(processes, db)
    load = Load(process.wait_listening())
    load.wait_for(2000)
    process.proc.send_signal(signal.SIGTERM)
    _, err = process.proc.communicate(timeout=30)
    load.finish()
    assert process.proc.returncode == 0, err
    assert load.acked <= stored_ids(db)
    assert set(load.statuses) <= {200, 503}


def test_kill_9_under_load_loses_nothing_acknowledged(
    processes: list[Process], tmp_path: Path
) -> None:
    """kill -9 while clients post: every messageId answered 200 was committed, so it is in
    the database when it is opened again."""
    db = tmp_path / "events.sqlite3"
    process = launch(processes, db)
    load = Load(process.wait_listening())
    load.wait_for(2000)
    process.proc.kill()
    process.proc.communicate(timeout=10)
    load.finish()
    assert load.acked
    assert load.acked <= stored_ids(db)


def test_full_disk_is_503_never_200(processes: list[Process], tmp_path: Path) -> None:
    """With the file size capped (RLIMIT_FSIZE, as on a full disk), writes fail with 503 and
    Retry-After; everything acknowledged before is stored and the database is intact."""
    db = tmp_path / "events.sqlite3"
    cap = 3 * 1024 * 1024
    preamble = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({cap}, {cap})); "
    process = launch(processes, db, preamble=preamble)
    http = Http(process.wait_listening())
    acked: set[str] = set()
    for n in range(200):
        ids = [f"{n}-{i}" for i in range(50)]
        sent = {"batch": [message(0, messageId=i, properties={"pad": "x" * 1000}) for i in ids]}
        answer = http.post("/v1/batch", sent)
        if answer.status != 200:
            break
        acked.update(ids)
    assert answer.status == 503
    assert answer.json["code"] == "storage_unavailable"
    assert "Retry-After" in answer.headers
    assert acked
    process.proc.send_signal(signal.SIGTERM)
    process.proc.communicate(timeout=15)
    assert acked <= stored_ids(db)
    import sqlite3

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_refuses_an_open_bind_without_write_keys(tmp_path: Path) -> None:
    """`--host 0.0.0.0` without `--write-key` exits 1 with an error that says why."""
    proc = subprocess.run(
        [sys.executable, "-m", "trackline", "collector", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.returncode == 1
    assert b"write key" in proc.stderr
    assert not (tmp_path / "trackline.sqlite3").exists()


def test_browser_options_serve_analytics_js_and_answer_preflights(
    processes: list[Process], tmp_path: Path
) -> None:
    """`--analytics-js FILE` serves the file; `--allow-origin` opens ingest to that origin."""
    library = tmp_path / "analytics.js"
    library.write_text("window.ok = 1;")
    process = launch(
        processes,
        tmp_path / "events.sqlite3",
        "--allow-origin",
        "http://localhost:3000",
        "--analytics-js",
        str(library),
    )
    http = Http(process.wait_listening())
    assert http.get("/analytics.js/v1/any/analytics.min.js").body == b"window.ok = 1;"
    headers = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    answer = http.request("OPTIONS", "/v1/t", headers=headers)
    assert answer.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--allow-origin", "localhost:3000", b"not an origin"),
        ("--analytics-js", "missing.js", b"missing.js"),
    ],
)
def test_wrong_browser_options_exit_1_saying_why(
    tmp_path: Path, option: str, value: str, problem: bytes
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trackline", "collector", "--port", "0", option, value],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.returncode == 1
    assert problem in proc.stderr
