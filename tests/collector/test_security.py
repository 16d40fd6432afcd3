"""Attacks on the collector over real sockets on 127.0.0.1, each beside the legitimate request
that must still succeed: DNS rebinding (a foreign Host), cross-site writes and clearing (a
foreign Origin), reads without the token, raw write keys, malformed and poisoned keys,
forwarded headers, and answers that must never carry exception text or miss `nosniff`."""

from __future__ import annotations

import concurrent.futures
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from tests.collector.conftest import Answer, Http, basic, message, source_of
from trackline.collector import RunningCollector, serve

TOKEN = "read-token-for-tests-0123456789"
EVIL = "http://evil.example"


def batch(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"batch": list(messages), **fields}


def host_header(collector: RunningCollector, name: str) -> dict[str, str]:
    return {"Host": f"{name}:{collector.port}"}


def plain_post(http: Http, document: Any, **headers: str) -> Answer:
    """A POST as a web page can send it without a preflight: text/plain, key in the body."""
    sent = {"Content-Type": "text/plain", **headers}
    return http.request("POST", "/v1/batch", orjson.dumps(document), sent)


@pytest.fixture
def guarded(db_path: Path) -> Iterator[RunningCollector]:
    """A collector with a write key and a read token."""
    with serve(db_path, write_keys=["secret-write-key"], read_token=TOKEN) as running:
        yield running


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- DNS rebinding ---------------------------------------------------------------------------


def test_rebinding_requests_are_refused_before_routing(
    collector: RunningCollector, http: Http
) -> None:
    """With `Host: evil.example:PORT` (a page that rebound its name to 127.0.0.1), reading,
    clearing, writing and even unknown paths get 421 before any route runs; the same
    requests naming 127.0.0.1 or localhost succeed."""
    assert http.post("/v1/batch", batch(message(1))).status == 200
    evil = host_header(collector, "evil.example")
    for method, path in [
        ("GET", "/api/events?meta=1"),
        ("GET", "/api/stats"),
        ("GET", "/api/stream"),
        ("GET", "/"),
        ("DELETE", "/api/events"),
        ("GET", "/no/such/route"),
    ]:
        answer = http.request(method, path, headers=evil)
        assert (answer.status, answer.json["code"]) == (421, "host_not_allowed"), path
        assert b"message-1" not in answer.body
        assert answer.headers["x-content-type-options"] == "nosniff"
    post = http.post("/v1/batch", batch(message(2)), headers=evil)
    assert post.status == 421
    assert [e["messageId"] for e in http.events()] == ["message-1"]
    for name in ("127.0.0.1", "localhost"):
        assert http.request("GET", "/api/stats", headers=host_header(collector, name)).status == 200
    assert http.request("DELETE", "/api/events", headers=host_header(collector, "localhost")).json
    assert http.events() == []


def test_ip_literals_and_allowed_names_are_answered(db_path: Path) -> None:
    """Any IP literal is answered (a LAN address, as a collector on 0.0.0.0 is reached), as
    are names given with allow_hosts; other names are not."""
    with serve(db_path, allow_hosts=["collector.test"]) as running:
        http = Http(running.url)
        for name in ("192.168.1.20", "[::1]", "collector.test", "COLLECTOR.TEST."):
            answer = http.request("GET", "/api/stats", headers=host_header(running, name))
            assert answer.status == 200, name
        answer = http.request("GET", "/api/stats", headers=host_header(running, "other.test"))
        assert answer.status == 421
        assert "--allow-host other.test" in answer.json["message"]


# -- cross-site requests ---------------------------------------------------------------------


def test_cross_site_writes_are_refused(collector: RunningCollector, http: Http) -> None:
    """A text/plain POST with a writeKey in the body from a foreign Origin stores nothing
    (403); the same from the collector's own origin, or from a program (no Origin), is
    stored."""
    own = f"http://127.0.0.1:{collector.port}"
    attack = plain_post(http, batch(message(1), writeKey="attacker"), Origin=EVIL)
    assert (attack.status, attack.json["code"]) == (403, "forbidden_origin")
    fetch_only = plain_post(
        http, batch(message(2), writeKey="k"), **{"Sec-Fetch-Site": "cross-site"}
    )
    assert fetch_only.status == 403
    assert http.events() == []
    assert plain_post(http, batch(message(3), writeKey="k"), Origin=own).json["accepted"] == 1
    assert plain_post(http, batch(message(4), writeKey="k")).json["accepted"] == 1
    assert {e["messageId"] for e in http.events()} == {"message-3", "message-4"}


def test_cross_site_clearing_is_refused(collector: RunningCollector, http: Http) -> None:
    """DELETE /api/events from a foreign Origin deletes nothing; from the collector's own
    origin (its page) it clears."""
    http.post("/v1/batch", batch(message(1)))
    answer = http.request("DELETE", "/api/events", headers={"Origin": EVIL})
    assert (answer.status, answer.json["code"]) == (403, "forbidden_origin")
    assert len(http.events()) == 1
    own = {"Origin": f"http://localhost:{collector.port}", "Host": f"localhost:{collector.port}"}
    assert http.request("DELETE", "/api/events", headers=own).json == {"deleted": 1}


def test_allowed_origins(db_path: Path) -> None:
    """An origin given with allow_origins may send events and clear; `*` lets any page send
    events but never clear."""
    app = "http://localhost:3000"
    with serve(db_path, allow_origins=[app]) as running:
        http = Http(running.url)
        assert plain_post(http, batch(message(1), writeKey="k"), Origin=app).status == 200
        assert plain_post(http, batch(message(2), writeKey="k"), Origin=EVIL).status == 403
        assert http.request("DELETE", "/api/events", headers={"Origin": app}).status == 200
    with serve(db_path, allow_origins=["*"]) as running:
        http = Http(running.url)
        assert plain_post(http, batch(message(3), writeKey="k"), Origin=EVIL).status == 200
        assert http.request("DELETE", "/api/events", headers={"Origin": EVIL}).status == 403
        assert [e["messageId"] for e in http.events()] == ["message-3"]


# -- reads -----------------------------------------------------------------------------------


def test_read_token_guards_every_read(guarded: RunningCollector) -> None:
    """With a read token, /api/*, the stream and the page answer 401 without it (ingest and
    /healthz stay open); with it as a bearer header, they answer."""
    http = Http(guarded.url)
    assert http.post("/v1/batch", batch(message(1)), key="secret-write-key").status == 200
    for method, path in [
        ("GET", "/api/events"),
        ("GET", "/api/events?format=ndjson"),
        ("GET", "/api/events/message-1"),
        ("GET", "/api/stats"),
        ("GET", "/api/stream"),
        ("DELETE", "/api/events"),
    ]:
        refused = http.request(method, path)
        assert (refused.status, refused.json["code"]) == (401, "unauthorized"), path
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = http.request(method, path, headers=bearer("wrong-token-0123456789"))
        assert wrong.status == 401
    page = http.get("/")
    assert page.status == 401
    assert b'action="debugger/login"' in page.body
    assert b"message-1" not in page.body
    assert http.get("/healthz").status == 200
    assert http.request("GET", "/api/events", headers=bearer()).json["events"][0]["userId"]
    assert http.request("GET", "/api/stats", headers=bearer()).json["events"] == 1
    assert http.request("GET", "/", headers=bearer()).status == 200


def test_login_sets_a_strict_http_only_cookie(guarded: RunningCollector) -> None:
    """The login form with the right token answers 303 to the page and sets a cookie
    (HttpOnly, SameSite=Strict, not the token) that lets the page and the API answer; a wrong
    token goes back to the login page, which says so; a login from another origin is
    refused."""
    http = Http(guarded.url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = http.request("POST", "/debugger/login", b"token=nope", form)
    assert (wrong.status, wrong.headers["location"]) == (303, "../?login=failed")
    assert "set-cookie" not in wrong.headers
    again = http.get("/?login=failed")
    assert again.status == 401
    assert b'role="alert">' in again.body
    assert b'role="alert" hidden>' in http.get("/").body
    foreign = http.request(
        "POST", "/debugger/login", f"token={TOKEN}".encode(), {**form, "Origin": EVIL}
    )
    assert foreign.status == 403
    pool = urllib3.PoolManager(retries=False)
    answer = pool.request(
        "POST",
        guarded.url + "/debugger/login",
        body=f"token={TOKEN}".encode(),
        headers=form,
        redirect=False,
    )
    assert answer.status == 303
    assert answer.headers["location"] == "../"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    sent = {"Cookie": cookie.split(";")[0]}
    assert http.request("GET", "/api/stats", headers=sent).status == 200
    assert http.request("GET", "/debugger", headers=sent).status == 200
    assert (
        http.request("GET", "/api/stats", headers={"Cookie": "trackline_read=1.abc"}).status == 401
    )


def test_no_token_means_reads_from_this_machine(collector: RunningCollector, http: Http) -> None:
    """Without a token a loopback client reads as before (no setup); a request whose client
    is unknown (forwarding headers from a proxy nobody named) is refused."""
    assert http.get("/api/stats").status == 200
    refused = http.request("GET", "/api/stats", headers={"X-Forwarded-For": "127.0.0.1"})
    assert (refused.status, refused.json["code"]) == (403, "forbidden")
    assert "--read-token" in refused.json["message"]


# -- write keys --------------------------------------------------------------------------------


def test_raw_write_keys_are_never_stored_or_returned(db_path: Path) -> None:
    """The key appears nowhere: not in rows, counts, listings, the stream or the database
    files; its key id stands in everywhere and works as the source filter."""
    key = "live-write-key-5f2d8c1e9a7b"
    with serve(db_path, write_keys=[key]) as running:
        http = Http(running.url)
        stream = http.pool.request(
            "GET", running.url + "/api/stream?meta=1", preload_content=False, timeout=5.0
        )
        assert http.post("/v1/batch", batch(message(1)), key=key).status == 200
        assert http.post("/v1/track", {**message(2), "writeKey": key}, key=None).status == 200
        text = b""
        for chunk in stream.stream(256, decode_content=False):
            text += chunk
            if text.count(b"data: {") >= 2:
                break
        stream.release_conn()
        answers = [
            text,
            http.get("/api/stats").body,
            http.get("/api/events?meta=1").body,
            http.get("/api/events/message-1").body,
            http.get("/").body,
        ]
        key_id = source_of(running, key)
        assert key_id.startswith("live~")
        assert orjson.loads(answers[1])["by_source"] == {key_id: 2}
        assert len(http.events(f"?source={key_id}")) == 2
        assert http.events(f"?source={key}") == []
        for answer in answers:
            assert key.encode() not in answer
    for file in db_path.parent.glob(db_path.name + "*"):
        assert key.encode() not in file.read_bytes(), file
    conn = sqlite3.connect(db_path)
    assert {row[0] for row in conn.execute("SELECT source FROM events")} == {key_id}
    conn.close()


@pytest.mark.parametrize(
    ("key", "status"),
    [("k" * 257, 400), ("new\nline", 400), ("", 401), ("wrong-key", 401)],
    ids=["too-long", "control-character", "empty", "unknown"],
)
def test_header_keys_are_decided_before_the_body_is_sent(
    db_path: Path, key: str, status: int
) -> None:
    """A malformed (400) or unknown (401) key in the header is answered as soon as the
    headers arrive: the client has not sent a byte of its body yet."""
    with serve(db_path, write_keys=["the-right-key"], header_timeout=2.0) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + b"Authorization: "
                + basic(key).encode()
                + b"\r\nContent-Length: 5000\r\n\r\n"
            )
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:80]
        assert b"the-right-key" not in answer


def poison(n: int) -> bytes:
    """A batch whose writeKey is a lone surrogate: it parses, but no database takes it."""
    return b'{"batch":[' + orjson.dumps(message(n)) + b'],"writeKey":"\\ud800"}'


@pytest.mark.parametrize("write_keys", [[], ["good-key"]], ids=["open", "with-keys"])
def test_a_poisoned_key_fails_alone(db_path: Path, write_keys: list[str]) -> None:
    """180 valid requests sent at the same time as 20 whose key is a lone surrogate: every
    valid one is 200 and stored, every poisoned one is 400 naming the key, none of the
    answers carries exception text."""
    with serve(db_path, write_keys=write_keys) as running:
        pool = urllib3.PoolManager(maxsize=16, retries=False, timeout=10.0)
        key = write_keys[0] if write_keys else "any-key"

        def send(n: int) -> tuple[int, int, bytes]:
            if n % 10 == 5:
                body, headers = poison(n), {"Content-Type": "text/plain"}
            else:
                body, headers = orjson.dumps(batch(message(n), writeKey=key)), {}
            answer = pool.request("POST", running.url + "/v1/batch", body=body, headers=headers)
            return n, answer.status, answer.data

        with concurrent.futures.ThreadPoolExecutor(16) as workers:
            results = list(workers.map(send, range(200)))
        for n, status, body in results:
            if n % 10 == 5:
                assert status == 400, body
                assert orjson.loads(body)["code"] == "invalid_write_key"
                assert b"surrogate" in body
            else:
                assert status == 200, body
            assert b"Error" not in body
            assert b"Traceback" not in body
        stats = Http(running.url).get("/api/stats").json
        assert stats["events"] == 180


# -- answers -----------------------------------------------------------------------------------


def test_error_answers_carry_no_exception_text(collector: RunningCollector, http: Http) -> None:
    """Storage failures, broken JSON and broken gzip are answered with the collector's own
    words: no SQLite, zlib or orjson message, no repr."""
    other = sqlite3.connect(collector.storage.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = http.post("/v1/batch", batch(message(1)))
        health = http.get("/healthz")
    finally:
        other.execute("ROLLBACK")
        other.close()
    broken = http.post("/v1/batch", raw=b'{"batch": [}')
    gz = http.post("/v1/batch", raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert (locked.status, health.status, broken.status, gz.status) == (503, 503, 400, 400)
    assert broken.json["message"] == "the body is not JSON (line 1, column 12)"
    for answer in (locked, health, broken, gz):
        text = answer.json["message"].lower()
        for leak in ("locked", "sqlite", "error", "unexpected character", "incorrect header"):
            assert leak not in text, text


def test_every_answer_says_nosniff(collector: RunningCollector, http: Http) -> None:
    """Successes, refusals, 404, 405, the page, its files, the stream, and the server's own
    408 and 400 all carry X-Content-Type-Options: nosniff; API answers are not cached."""
    answers = [
        http.post("/v1/batch", batch(message(1))),
        http.post("/v1/batch", raw=b"{"),
        http.get("/api/events"),
        http.get("/nothing"),
        http.get("/v1/batch"),
        http.get("/"),
        http.get("/debugger/app.js"),
        http.get("/healthz"),
    ]
    for answer in answers:
        assert answer.headers.get("x-content-type-options") == "nosniff", answer
    assert http.get("/api/events").headers["cache-control"] == "no-store"
    stream = http.pool.request("GET", collector.url + "/api/stream", preload_content=False)
    assert stream.headers["x-content-type-options"] == "nosniff"
    stream.release_conn()
    for raw in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX"):
        with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
            sock.sendall(raw)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith((b"HTTP/1.1 400", b"HTTP/1.1 408")), received[:60]
        assert b"x-content-type-options: nosniff" in received.lower()


# -- proxies -----------------------------------------------------------------------------------


def test_forwarded_headers_only_from_a_trusted_proxy(db_path: Path) -> None:
    """Behind a proxy named with trusted_proxies, X-Forwarded-For decides who the client is
    (a remote one may not clear), X-Forwarded-Proto and -Host what the browser's origin is."""
    with serve(
        db_path, trusted_proxies=["127.0.0.1"], allow_hosts=["collector.example"]
    ) as running:
        http = Http(running.url)
        http.post("/v1/batch", batch(message(1)))
        remote = {"X-Forwarded-For": "203.0.113.9"}
        assert http.request("DELETE", "/api/events", headers=remote).status == 403
        assert http.request("GET", "/api/stats", headers=remote).status == 403
        spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}
        assert http.request("GET", "/api/stats", headers=spoofed).status == 403
        public = {
            "X-Forwarded-For": "127.0.0.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "collector.example",
        }
        own = {**public, "Origin": "https://collector.example"}
        assert plain_post(http, batch(message(2), writeKey="k"), **own).status == 200
        foreign = {**public, "Origin": f"http://127.0.0.1:{running.port}"}
        assert plain_post(http, batch(message(3), writeKey="k"), **foreign).status == 403
        renamed = {**public, "X-Forwarded-Host": "other.example"}
        assert http.request("GET", "/api/stats", headers=renamed).status == 421
        assert http.request("DELETE", "/api/events", headers=own).json == {"deleted": 2}


def test_slow_header_key_requests_do_not_hold_places(db_path: Path) -> None:
    """256 connections with a wrong header key that then stall: each is answered 401 at once
    without a place in the ingest pool, and a valid client is served meanwhile."""
    with serve(db_path, write_keys=["good-key"], header_timeout=5.0, body_timeout=10.0) as running:
        stalled = []
        try:
            for _ in range(256):
                sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
                sock.sendall(
                    b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 400000\r\n"
                    + b"Authorization: "
                    + basic("wrong-key").encode()
                    + b"\r\n\r\n{"
                )
                stalled.append(sock)
            started = time.monotonic()
            answer = Http(running.url).post("/v1/batch", batch(message(1)), key="good-key")
            took = time.monotonic() - started
            assert answer.status == 200
            assert took < 5.0  # held behind them, it would wait for their 10 s body deadline
            for sock in stalled[:8]:
                assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
        finally:
            for sock in stalled:
                sock.close()


def test_analytics_js_settings_name_the_host_the_browser_used(db_path: Path) -> None:
    """Behind a trusted proxy, the settings analytics.js loads send it to the scheme and host
    the browser used (X-Forwarded-Proto/-Host), not to the collector's own address; a
    malformed key in the path has no settings."""
    with serve(
        db_path, trusted_proxies=["127.0.0.1"], allow_hosts=["collector.example"]
    ) as running:
        http = Http(running.url)
        forwarded = {
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "collector.example",
        }
        answer = http.request("GET", "/v1/projects/web-key/settings", headers=forwarded)
        segment = answer.json["integrations"]["Segment.io"]
        assert (segment["protocol"], segment["apiHost"]) == ("https", "collector.example/v1")
        too_long = http.request("GET", f"/v1/projects/{'k' * 300}/settings", headers=forwarded)
        assert too_long.status == 404
