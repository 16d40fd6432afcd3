"""`trackline collector` on PostgreSQL: several processes behind one port share dedupe, counts,
reads and the live stream; what needs PostgreSQL is refused on SQLite with one line."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from tests.collector.conftest import Http, message
from tests.collector.test_cli import Process
from tests.reliability.test_postgres_faults import children, stop
from tests.support.capture import CaptureServer
from trackline.collector.destinations.files import LOCK_NAME


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from trackline.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--processes", "2"), 1, "processes: needs a PostgreSQL database"),
        (("--retention", "30x"), 2, "'30x' is not a duration"),
        (("--retention", "0d"), 2, "must be longer than zero"),
        (("--processes", "0"), 2, "must be at least 1"),
    ],
)
def test_what_sqlite_cannot_do_is_refused_with_one_line(
    tmp_path: Path, args: tuple[str, ...], code: int, says: str
) -> None:
    """Several processes on a SQLite file, like any refused option, exit 1 with one line
    saying why (2, the usage error, when the value itself is not one: a bad retention)."""
    done = run_cli("collector", "--port", "0", "--db", str(tmp_path / "x.sqlite3"), *args)
    assert done.returncode == code
    assert says in done.stderr
    assert done.stdout == ""


class Stream:
    """`GET /api/stream` read on a thread: the messageIds of the events it announces."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.connection.request("GET", "/api/stream")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.ids: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        # read1, not line iteration: http.client's readline on a chunked body waits for the
        # next chunk before returning the last line of this one.
        pending = b""
        try:
            while chunk := self.response.read1(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                found = [orjson.loads(line[6:]) for line in lines if line.startswith(b"data: ")]
                with self.changed:
                    self.ids += [event["messageId"] for event in found]
                    self.changed.notify_all()
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed by the test (AttributeError: http.client's reader was let go)

    def wait_for(self, count: int, timeout: float) -> list[str]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.ids) >= count, timeout)
            return list(self.ids)

    def close(self) -> None:
        # Shut the socket first: closing the response waits for the reading thread's lock,
        # held until its read returns.
        if self.connection.sock is not None:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def _serving(process: Process, url: str, count: int) -> Http:
    """Wait until `count` processes run and one of them answers; a client of `url`."""
    deadline = time.monotonic() + 20
    while len(children(process.proc.pid)) < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    http_ = Http(url)
    while http_.get("/healthz").status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return http_


def test_processes_behind_one_port_share_dedupe_counts_reads_and_the_stream(
    pg_url: str,
) -> None:
    """Three processes serve one port; posts land on any of them (a new connection each).
    Every process counts the same totals, a resend to another process is a duplicate, and a
    live stream opened on one process announces events every process stored. SIGTERM stops
    every process and exits 0."""
    parts = urlsplit(pg_url)
    netloc = f"{parts.username}:sekrit@{parts.hostname}:{parts.port}"
    with_password = parts._replace(netloc=netloc).geturl()
    process = Process(["collector", "--port", "0", "--db", with_password, "--processes", "3"])
    try:
        url = process.wait_listening()
        http_ = _serving(process, url, 3)
        stream = Stream(url)
        time.sleep(0.5)  # every process is listening for the others' events
        for n in range(30):
            one = Http(url)  # a fresh connection: any process may take it
            answer = one.post("/v1/batch", {"batch": [message(n)]})
            assert answer.json["accepted"] == 1
            again = Http(url).post("/v1/batch", {"batch": [message(n)]})
            assert again.json == {"accepted": 0, "duplicates": 1, "rejected": []}
            one.pool.clear()
        totals = {orjson.dumps(Http(url).get("/api/stats").json) for _ in range(6)}
        assert len(totals) == 1
        stats = orjson.loads(totals.pop())
        assert (stats["events"], stats["duplicates"]) == (30, 30)
        assert len(http_.events("?limit=100")) == 30
        seen = stream.wait_for(30, timeout=10)
        assert sorted(seen) == sorted(f"message-{n}" for n in range(30))
        stream.close()
        kids = children(process.proc.pid)
        process.proc.send_signal(signal.SIGTERM)
        out, _ = process.proc.communicate(timeout=40)
        assert process.proc.returncode == 0
        assert b"trackline collector stopped" in out
        assert not any(Path(f"/proc/{pid}").exists() for pid in kids)
    finally:
        stop(process)


def test_the_listening_line_hides_the_password(pg_url: str) -> None:
    """The line the collector prints names the database without its password."""
    parts = urlsplit(pg_url)
    netloc = f"{parts.username}:sekrit@{parts.hostname}:{parts.port}"
    with_password = parts._replace(netloc=netloc).geturl()
    process = Process(["collector", "--port", "0", "--db", with_password])
    try:
        line = process.first_line()
        assert "sekrit" not in line
        assert f"{parts.username}:***@" in line
    finally:
        stop(process)


def test_processes_deliver_each_event_once(
    pg_url: str, tmp_path: Path, capture: CaptureServer
) -> None:
    """Two processes on PostgreSQL, both running the routers of one Tracking API destination:
    every event stored by either is delivered exactly once, and the destination's counts,
    read from any process, say so."""
    config = tmp_path / "trackline.toml"
    config.write_text(
        '[[destination]]\nname = "Forward"\nkind = "tracking-api"\n'
        f'host = "{capture.url}"\nwrite_key = "forward-key"\n'
    )
    process = Process(
        ["collector", "--port", "0", "--db", pg_url, "--processes", "2", "--config", str(config)]
    )
    try:
        url = process.wait_listening()
        _serving(process, url, 2)
        for start in range(0, 200, 10):
            answer = Http(url).post(
                "/v1/batch", {"batch": [message(n) for n in range(start, start + 10)]}
            )
            assert answer.json["accepted"] == 10
        capture.wait_for_messages(200, timeout=30)
        deadline = time.monotonic() + 10
        while (counts := Http(url).get("/api/destinations").json[0])["delivered"] < 200:
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)
        time.sleep(0.5)  # anything delivered twice would have arrived by now
        assert sorted(capture.delivered_ids()) == sorted(f"message-{n}" for n in range(200))
        assert (counts["pending"], counts["retrying"], counts["failed"]) == (0, 0, 0)
    finally:
        stop(process)


def _lock_holder(path: Path) -> int | None:
    """The pid holding a `flock` on `path`, from /proc/locks."""
    inode = str(os.stat(path).st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        # 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF  (pid, device:inode)
        fields = line.split()
        if fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[1] == inode:
            return int(fields[4])
    return None


def test_processes_share_a_file_destination_one_writing_at_a_time(
    pg_url: str, tmp_path: Path
) -> None:
    """Two processes route to one file path: one holds it and writes every event once; killed,
    the other takes the path over and writes what comes next, nothing twice."""
    exports = tmp_path / "exports"
    config = tmp_path / "trackline.toml"
    config.write_text(f'[[destination]]\nname = "Files"\nkind = "file"\npath = "{exports}"\n')
    process = Process(
        ["collector", "--port", "0", "--db", pg_url, "--processes", "2", "--config", str(config)]
    )

    def post_and_drain(numbers: range) -> list[str]:
        for start in range(numbers.start, numbers.stop, 10):
            batch = [message(n) for n in range(start, start + 10)]
            assert Http(url).post("/v1/batch", {"batch": batch}).json["accepted"] == 10
        deadline = time.monotonic() + 30
        while (counts := Http(url).get("/api/destinations").json[0])["delivered"] < numbers.stop:
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)
        return [
            orjson.loads(line)["messageId"]
            for part in sorted(exports.glob("*/*.ndjson*"))
            for line in part.read_text().splitlines()
        ]

    try:
        url = process.wait_listening()
        _serving(process, url, 2)
        written = post_and_drain(range(200))
        assert sorted(written) == sorted(f"message-{n}" for n in range(200))
        writer = _lock_holder(exports / LOCK_NAME)
        assert writer in children(process.proc.pid)
        os.kill(writer, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while writer in (alive := children(process.proc.pid)) or len(alive) < 2:
            assert time.monotonic() < deadline, alive
            time.sleep(0.05)
        written = post_and_drain(range(200, 300))
        assert sorted(written) == sorted(f"message-{n}" for n in range(300))
        assert _lock_holder(exports / LOCK_NAME) not in (None, writer)
    finally:
        stop(process)


def _connections_held(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local `port` each process holds."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(fields[9])  # the socket's inode
    held = {}
    for pid in pids:
        links = [os.readlink(path) for path in Path(f"/proc/{pid}/fd").iterdir()]
        held[pid] = sum(link[len("socket:[") : -1] in established for link in links)
    return held


def _answered(connection: socket.socket) -> bytes:
    host = f"127.0.0.1:{connection.getpeername()[1]}"
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
    return connection.recv(4096).split(b"\r\n", 1)[0]


def test_processes_take_a_burst_of_connections_in_turn(pg_url: str) -> None:
    """Eight keep-alive connections opened at once to two processes: each process holds four
    (left to the kernel, one process took seven). A process killed with -9 is replaced and the
    connections opened after it are served; the parent killed with -9 takes the processes with
    it once their connections end, so nothing is left holding the port with nobody accepting."""
    process = Process(["collector", "--port", "0", "--db", pg_url, "--processes", "2"])
    opened: list[socket.socket] = []
    try:
        url = process.wait_listening()
        port = urlsplit(url).port or 0
        _serving(process, url, 2).pool.clear()
        opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        assert [_answered(c) for c in opened] == [b"HTTP/1.1 200 OK"] * 8
        kids = children(process.proc.pid)
        assert sorted(_connections_held(kids, port).values()) == [4, 4]

        os.kill(kids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(set(children(process.proc.pid)) - {kids[0]}) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        later = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        opened += later
        assert [_answered(c) for c in later] == [b"HTTP/1.1 200 OK"] * 4

        survivors = children(process.proc.pid)
        process.proc.kill()
        process.proc.communicate(timeout=10)
        for connection in opened:
            connection.close()
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in survivors):
            assert time.monotonic() < deadline, "a process outlived its parent"
            time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        for connection in opened:
            connection.close()
        stop(process)
