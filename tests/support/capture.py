"""A real HTTP server on 127.0.0.1 that records what clients send and answers as scripted.

Tests of the client use it where the collector would not let them choose the answer: a burst of
503s, a 429 with Retry-After, a 413 above a size, a black hole, a connection reset. It speaks
HTTP/1.1 with keep-alive like a real API, inflates gzip bodies, and records every request.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import http.server
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted answer. `action` is "answer", "reset" (RST, no answer) or "hang"."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b'{"success":true}'
    delay: float = 0.0
    action: str = "answer"


@dataclasses.dataclass(frozen=True)
class Captured:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    at: float
    status: int | None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def batch(self) -> list[dict[str, Any]]:
        return list(self.json["batch"])

    @property
    def write_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return None
        return base64.b64decode(auth[6:]).decode().split(":", 1)[0]


class CaptureServer:
    """Start with `with CaptureServer() as server:`; `server.url` is the client's host."""

    def __init__(self, max_body: int | None = None, port: int = 0) -> None:
        self.max_body = max_body
        self.requests: list[Captured] = []
        self._script: list[Reply] = []
        self.default = Reply()
        #: Decides the answer from the body before the script does, when set and not None.
        self.rule: Callable[[bytes], Reply | None] | None = None
        self._lock = threading.Condition()
        self._closing = threading.Event()
        #: Answers wait while it is clear: a test holds them to see what goes on meanwhile.
        self.gate = threading.Event()
        self.gate.set()
        #: Requests being answered now, and the most there ever were at once.
        self.in_progress = 0
        self.most_in_progress = 0
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.owner = self
        # A short poll lets close() return at once instead of after serve_forever's 0.5 s poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order, then with `default`."""
        with self._lock:
            self._script.extend(replies)

    def next_reply(self, body: bytes) -> Reply:
        with self._lock:
            if self.max_body is not None and len(body) > self.max_body:
                return Reply(413, body=b'{"code":"body_too_large","message":"too large"}')
            if self.rule is not None and (ruled := self.rule(body)) is not None:
                return ruled
            if self._script:
                return self._script.pop(0)
            return self.default

    def record(self, captured: Captured) -> None:
        with self._lock:
            self.requests.append(captured)
            self._lock.notify_all()

    def delivered(self) -> list[dict[str, Any]]:
        """Every message of every batch that was answered with a 2xx, in arrival order."""
        with self._lock:
            requests = list(self.requests)
        return [
            message
            for request in requests
            if request.status is not None and 200 <= request.status < 300
            for message in request.batch
        ]

    def delivered_ids(self) -> list[str]:
        return [message["messageId"] for message in self.delivered()]

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` messages were delivered; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                delivered = self.delivered()
                remaining = deadline - time.monotonic()
                if len(delivered) >= count or remaining <= 0:
                    return delivered
                self._lock.wait(remaining)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[Captured]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return list(self.requests)

    def hang_until_closed(self, limit: float = 30.0) -> None:
        self._closing.wait(limit)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: CaptureServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the collector under kill -9) is expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK on every request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        with owner._lock:
            owner.in_progress += 1
            owner.most_in_progress = max(owner.most_in_progress, owner.in_progress)
        try:
            self._answer(owner)
        finally:
            with owner._lock:
                owner.in_progress -= 1

    def _answer(self, owner: CaptureServer) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        body = raw
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(raw)
        reply = owner.next_reply(body)
        headers = {key.lower(): value for key, value in self.headers.items()}
        status = reply.status if reply.action == "answer" else None
        owner.record(Captured(self.path, headers, raw, body, time.monotonic(), status))
        owner.gate.wait(30)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.action == "hang":
            owner.hang_until_closed()
            self.close_connection = True
            return
        if reply.action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.body)
