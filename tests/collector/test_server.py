"""Serving: deadlines for slow clients, an unread body after a refusal, restarts on the same
file, graceful stop, and the refusal to listen openly without write keys."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.collector.conftest import Http, basic, message, stored_ids
from trackline.collector import OpenBindError, RunningCollector, serve, start
from trackline.collector.server import GIL_SWITCH_SECONDS


def connect(collector: RunningCollector) -> socket.socket:
    host, port = collector.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5.0)
    return sock


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    received = b""
    sock.settimeout(limit)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def request_head(length: int, path: str = "/v1/batch") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic('key')}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_slow_body_gets_408_and_is_closed(collector: RunningCollector, http: Http) -> None:
    """A body that does not arrive within the body deadline (1 s here) is answered 408 and
    the connection closed; nothing is stored."""
    body = orjson.dumps({"batch": [message(1)]})
    with connect(collector) as sock:
        sock.sendall(request_head(len(body)) + body[:10])
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in answer
    assert 0.8 < took < 3.0
    assert http.events() == []


def test_slow_headers_get_408_and_are_closed(collector: RunningCollector) -> None:
    """Headers trickled a byte at a time are cut off at the header deadline (1 s here), even
    though bytes keep coming: each byte does not buy more time."""
    head = request_head(2)
    with connect(collector) as sock:
        started = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - started < 3.0 and sent < len(head):
                sock.send(head[sent : sent + 1])
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = read_until_closed(sock)
        took = time.monotonic() - started
    assert sent < len(head)
    assert answer.startswith(b"HTTP/1.1 408 ") or answer == b""
    assert took < 3.0


def test_silent_connection_is_closed_without_an_answer(collector: RunningCollector) -> None:
    """A connection that never sends a byte is closed at the header deadline, silently."""
    with connect(collector) as sock:
        answer, took = read_until_closed(sock)
    assert answer == b""
    assert 0.8 < took < 3.0


def test_keep_alive_connection_gets_the_header_deadline_again(collector: RunningCollector) -> None:
    """After an answer on a kept-alive connection, the next request's headers have the same
    deadline: half a request line is answered 408."""
    body = orjson.dumps({"batch": [message(1)]})
    with connect(collector) as sock:
        sock.sendall(request_head(len(body)) + body)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST /v1/ba")
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took < 3.0


def test_good_requests_pass_while_slow_clients_hold_connections(
    collector: RunningCollector, http: Http
) -> None:
    """50 connections stuck in their headers do not keep a good request from being served."""
    stuck = [connect(collector) for _ in range(50)]
    try:
        for sock in stuck:
            sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert http.post("/v1/batch", {"batch": [message(1)]}).status == 200
        # Held behind them it would wait for their header deadline (1 s in these tests).
        assert time.monotonic() - started < 0.8
    finally:
        for sock in stuck:
            sock.close()


def test_refused_body_is_discarded_so_the_client_reads_the_answer(
    collector: RunningCollector,
) -> None:
    """After a 413 answered before the body was read, the rest of the body is discarded: the
    client sends it all, reads the 413 (no reset), and may reuse the connection."""
    big = orjson.dumps({"batch": [message(1, properties={"pad": "x" * 700_000})]})
    small = orjson.dumps({"batch": [message(2)]})
    with connect(collector) as sock:
        sock.sendall(request_head(len(big)) + big)
        assert read_response(sock).startswith(b"HTTP/1.1 413 ")
        sock.sendall(request_head(len(small)) + small)
        second = read_response(sock)
    assert second.startswith(b"HTTP/1.1 200 ")


def test_refused_body_that_stops_coming_is_closed(collector: RunningCollector) -> None:
    """A refused body whose rest never arrives does not hold the connection past the deadline."""
    with connect(collector) as sock:
        sock.sendall(request_head(900_000) + b"{")
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert took < 3.0


def test_restart_on_the_same_database_keeps_everything(db_path: Path) -> None:
    """Events, counters and dedupe survive a stop and a new collector on the same file."""
    with serve(db_path) as first:
        http = Http(first.url)
        assert http.post("/v1/batch", {"batch": [message(1), message(2)]}).status == 200
        http.post("/v1/batch", {"batch": [message(2), {"type": "track"}]})
    with serve(db_path) as second:
        http = Http(second.url)
        again = http.post("/v1/batch", {"batch": [message(2), message(3)]})
        assert again.json == {"accepted": 1, "duplicates": 1, "rejected": []}
        assert [e["messageId"] for e in http.events()] == ["message-3", "message-2", "message-1"]
        stats = http.get("/api/stats").json
    assert (stats["events"], stats["duplicates"], stats["rejected"]) == (3, 2, 1)


def test_open_collector_refuses_to_listen_beyond_loopback(db_path: Path) -> None:
    """Without write keys, any non-loopback address is refused with a clear error, before
    anything is opened; with a key it serves there."""
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        with pytest.raises(OpenBindError, match="write key"):
            start(db_path, host=host)
    assert not db_path.exists()
    with serve(db_path, host="0.0.0.0", write_keys=["secret"]) as running:
        http = Http(f"http://127.0.0.1:{running.port}")
        assert http.post("/v1/batch", {"batch": [message()]}, key="secret").status == 200


def test_stop_finishes_in_flight_requests(db_path: Path) -> None:
    """stop() while clients post: every request answered 200 is in the store afterwards."""
    running = start(db_path)
    acked: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        pool = urllib3.PoolManager(retries=False, timeout=5.0)
        for n in range(10_000):
            ids = [f"w{worker}-{n}-{i}" for i in range(50)]
            body = orjson.dumps({"batch": [message(0, messageId=i) for i in ids]})
            try:
                answer = pool.request(
                    "POST",
                    running.url + "/v1/batch",
                    body=body,
                    headers={"Authorization": basic("k")},
                )
            except urllib3.exceptions.HTTPError:
                return
            if answer.status != 200:
                return
            with lock:
                acked.extend(ids)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    while len(acked) < 500:
        time.sleep(0.01)
    running.stop()
    for worker in workers:
        worker.join(10)
    assert set(acked) <= stored_ids(db_path)


def test_after_a_discarded_body_the_header_deadline_applies_again(
    collector: RunningCollector,
) -> None:
    """Once the rest of a refused body has been discarded, the next request on the connection
    has the usual header deadline: half a request line is answered 408."""
    big = orjson.dumps({"batch": [message(1, properties={"pad": "x" * 700_000})]})
    with connect(collector) as sock:
        sock.sendall(request_head(len(big)) + big)
        assert read_response(sock).startswith(b"HTTP/1.1 413 ")
        sock.sendall(b"POST /v1/ba")
        answer, took = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert took < 3.0


def test_create_app_from_a_path_owns_its_store(db_path: Path) -> None:
    """create_app(path) under any ASGI server opens the store at startup and closes it at
    shutdown: what it acknowledged is in the file afterwards."""
    import uvicorn

    from trackline.collector import create_app

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(db_path), log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        http = Http(f"http://127.0.0.1:{port}")
        assert http.post("/v1/batch", {"batch": [message(1)]}).json["accepted"] == 1
    finally:
        server.should_exit = True
        thread.join(10)
    assert stored_ids(db_path) == {"message-1"}


def test_stop_ends_open_live_streams(db_path: Path) -> None:
    """An open /api/stream does not hold a graceful stop: the stream ends and stop() returns
    promptly."""
    running = start(db_path)
    pool = urllib3.PoolManager(retries=False)
    stream = pool.request("GET", running.url + "/api/stream", preload_content=False, timeout=5.0)
    assert stream.status == 200
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 3.0
    stream.release_conn()


def test_the_uvicorn_internals_the_deadlines_use_are_there(collector: RunningCollector) -> None:
    """The protocol that carries the deadlines extends uvicorn's h11 protocol and uses these
    of its parts; a uvicorn release without them fails here, not in production."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    for method in ("connection_made", "data_received", "connection_lost", "on_response_complete"):
        assert callable(getattr(H11Protocol, method))
    for method in ("send_400_response", "pause_writing", "resume_writing"):
        assert callable(getattr(H11Protocol, method))
    with connect(collector) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        (protocol,) = collector._server.server_state.connections
        assert isinstance(protocol, H11Protocol)
        assert isinstance(protocol.conn, h11.Connection)
        assert protocol.cycle is not None
        assert protocol.transport is not None
        assert protocol.loop is not None


def test_a_process_run_serves_switches_the_gil_often_and_start_leaves_it(db_path: Path) -> None:
    """`run` owns its process and sets the GIL switch interval its writer thread needs;
    `start`, in a process of the caller's, leaves Python's setting as it found it."""
    script = (
        "import os, sys\n"
        "from trackline.collector.server import run\n"
        "def ready(url):\n"
        "    print(sys.getswitchinterval(), flush=True)\n"
        "    os._exit(0)\n"
        f"run({str(db_path)!r}, port=0, on_ready=ready)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[0]) == pytest.approx(GIL_SWITCH_SECONDS)
    assert GIL_SWITCH_SECONDS < 0.005
    before = sys.getswitchinterval()
    with serve(db_path, port=0):
        assert sys.getswitchinterval() == before
