"""What one client, or everyone together, may hold: slow wrong-key bodies cannot take the
places of valid requests, reads and live streams are capped, a client that stops reading its
answer is disconnected, `q=` is bounded, and a large listing is streamed with flat memory."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.collector.conftest import Http, message
from tests.support.collector_process import CollectorProcess, PeakMemory
from trackline.collector import RunningCollector, serve
from trackline.collector.ingest import Envelope, process
from trackline.collector.store import SQLiteStore

RECEIVED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def fill(path: Path, count: int, pad: int, *, source: str = "~000000000000") -> None:
    """Store `count` events of about `pad` bytes each straight into the file at `path`."""
    with SQLiteStore(path) as store:
        for start in range(0, count, 500):
            numbers = range(start, min(count, start + 500))
            envelope = Envelope([message(n, properties={"pad": "x" * pad}) for n in numbers])
            store.write(process(envelope, source=source, received_at=RECEIVED).rows)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def stuck_get(collector: RunningCollector, path: str) -> socket.socket:
    """A GET whose answer is never read, on a socket with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", collector.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def answered(socks: list[socket.socket], expected: int, timeout: float = 10.0) -> list[bytes]:
    """The first bytes of the answers that arrive on `socks`, waiting until `expected` did."""
    waiting = list(socks)
    heads: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(heads) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], deadline - time.monotonic())
        for sock in readable:
            heads.append(sock.recv(65536)[:13])
            waiting.remove(sock)
    return heads


def closed_by_server(sock: socket.socket, timeout: float = 15.0) -> bool:
    """Whether the server ends the connection (reading out what it had sent meanwhile)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set limits (module constants of trackline.collector.limits) for collectors started
    afterwards."""

    def set_limits(**limits: int) -> None:
        for name, value in limits.items():
            monkeypatch.setattr(f"trackline.collector.limits.{name}", value)

    return set_limits


def test_slow_body_key_requests_fill_only_their_clients_share(db_path: Path) -> None:
    """256 connections from one address (127.0.0.2) that start a body (key in the body, as
    analytics.js sends it) and stall: they hold at most that address's share of places, the
    rest are answered 503 at once, and valid clients on another address, with the key in the
    body or in the header, are served meanwhile."""
    with serve(db_path, write_keys=["good-key"], body_timeout=10.0) as running:
        stalled = []
        try:
            for _ in range(256):
                sock = socket.create_connection(
                    ("127.0.0.1", running.port), timeout=5, source_address=("127.0.0.2", 0)
                )
                sock.sendall(
                    b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                    b'Content-Length: 400000\r\n\r\n{"writeKey":"wrong-key","batch":['
                )
                stalled.append(sock)
            http = Http(running.url)
            started = time.monotonic()
            in_body = http.post(
                "/v1/batch", {"batch": [message(1)], "writeKey": "good-key"}, key=None
            )
            in_header = http.post("/v1/batch", {"batch": [message(2)]}, key="good-key")
            took = time.monotonic() - started
            assert (in_body.status, in_header.status) == (200, 200)
            assert took < 5.0  # held behind them, they would wait for the 10 s body deadline
            answers = answered(stalled, expected=256 - 16)
            assert answers == [b"HTTP/1.1 503 "] * (256 - 16)
        finally:
            for sock in stalled:
                sock.close()


def test_reads_are_capped_and_unread_answers_are_cut_off(
    db_path: Path, gated: Callable[..., None]
) -> None:
    """Two listings nobody reads hold the two read places: a third read is 503 with
    Retry-After; once the send deadline passes they are disconnected and reads work again."""
    gated(READS=2, READS_PER_CLIENT=2)
    fill(db_path, 400, 20_000)  # an 8 MB listing: more than the sockets buffer
    with serve(db_path, send_timeout=1.0) as running:
        http = Http(running.url)
        stuck = [stuck_get(running, "/api/events?limit=10000") for _ in range(2)]
        try:
            wait_until(lambda: http.get("/api/stats").status == 503)
            refused = http.get("/api/stats")
            assert refused.json["code"] == "overloaded"
            assert "Retry-After" in refused.headers
            # Nothing reads the two answers: the send deadline frees their places.
            wait_until(lambda: http.get("/api/stats").status == 200)
            assert all(closed_by_server(sock) for sock in stuck)
            assert len(http.events("?limit=3")) == 3
        finally:
            for sock in stuck:
                sock.close()


def test_live_streams_are_capped(db_path: Path, gated: Callable[..., None]) -> None:
    """Past the number of live streams, another is 503; when one closes, a new one opens."""
    gated(SUBSCRIBERS=3, SUBSCRIBERS_PER_CLIENT=3)
    with serve(db_path) as running:
        streams: list[urllib3.BaseHTTPResponse] = []

        def open_stream() -> int:
            pool = urllib3.PoolManager(retries=False, timeout=5.0)
            stream = pool.request("GET", running.url + "/api/stream", preload_content=False)
            if stream.status == 200:
                streams.append(stream)
            else:
                stream.drain_conn()
                pool.clear()
            return stream.status

        try:
            assert [open_stream() for _ in range(4)] == [200, 200, 200, 503]
            streams.pop(0).close()
            wait_until(lambda: open_stream() == 200)
            assert len(streams) == 3
        finally:
            for stream in streams:
                stream.close()


def test_a_subscriber_that_stops_reading_is_disconnected(db_path: Path) -> None:
    """A live stream whose client reads nothing while 8 MB of events arrive is disconnected
    after the send deadline and leaves the hub; the collector keeps storing, and a new
    stream works."""
    with serve(db_path, send_timeout=1.0) as running:
        sock = stuck_get(running, "/api/stream")
        try:
            http = Http(running.url)
            wait_until(lambda: running.storage.hub.has_subscribers)
            pad = "x" * 20_000
            for n in range(0, 400, 20):
                body = {"batch": [message(i, properties={"pad": pad}) for i in range(n, n + 20)]}
                assert http.post("/v1/batch", body).status == 200
            wait_until(lambda: not running.storage.hub.has_subscribers)
            assert closed_by_server(sock)
        finally:
            sock.close()
        stream = http.pool.request(
            "GET", running.url + "/api/stream", preload_content=False, timeout=5.0
        )
        assert stream.status == 200
        http.post("/v1/batch", {"batch": [message(1000)]})
        received = b""
        for chunk in stream.stream(256, decode_content=False):
            received += chunk
            if b"message-1000" in received:
                break
        stream.close()


def test_search_is_bounded(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`q` is at most 256 characters; it (and `source`, `user_id`, `anonymous_id`, which no
    SQLite index serves) looks at the newest MAX_SCAN_ROWS events only; a read past its time
    budget is stopped with a 400 saying how to narrow it."""
    fill(db_path, 3000, 10)
    monkeypatch.setattr("trackline.collector.store.sqlite.MAX_SCAN_ROWS", 1000)
    with serve(db_path) as running:
        http = Http(running.url)
        too_long = http.get("/api/events?q=" + "x" * 257)
        assert (too_long.status, too_long.json["code"]) == (400, "invalid_parameter")
        assert http.events("?q=message-2999") != []
        assert http.events("?q=message-10&limit=1") == []  # older than the newest 1000
        assert http.events("?user_id=user-2999") != []
        assert http.events("?user_id=user-10") == []  # older than the newest 1000
        assert len(http.events("?event=Item Purchased&limit=3000")) == 3000  # indexed: all
        monkeypatch.setattr("trackline.collector.store.sqlite.READ_BUDGET_SECONDS", 0.0)
        stopped = http.get("/api/events?q=nothing-like-this")
        assert (stopped.status, stopped.json["code"]) == (400, "query_too_costly")
        assert http.get("/api/stats").status == 200


def test_a_large_listing_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    """`GET /api/events?meta=1&limit=10000` of 3 KB events (a 30 MB answer) from a collector
    process: its peak memory grows by a small fraction of the answer (about 4 MB here; it once
    grew by four times the answer, 124 MB), and the answer is whole and valid."""
    db = tmp_path / "events.sqlite3"
    fill(db, 10_000, 3000)
    collector = CollectorProcess(db)
    collector.start()
    try:
        http = Http(collector.url)
        assert len(http.events("?limit=100")) == 100  # warm: code paths and caches loaded
        memory = PeakMemory(collector.pid)
        response = http.pool.request(
            "GET", collector.url + "/api/events?meta=1&limit=10000", preload_content=False
        )
        size = 0
        tail = b""
        for chunk in response.stream(1 << 16):
            size += len(chunk)
            tail = (tail + chunk)[-64:]
        growth = memory.growth()
        assert size > 30_000_000
        assert tail.endswith(b'}],"next":null}')
        assert growth < 8 * 1024 * 1024, f"peak grew by {growth} bytes for a {size} byte answer"
        assert len(orjson.loads(http.get("/api/events?limit=10000").body)["events"]) == 10_000
    finally:
        collector.stop()
