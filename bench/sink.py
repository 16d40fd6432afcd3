"""A fast counting HTTP sink for the benchmarks: answers every event POST with 200, counts events.

Every library under test posts to it: segment-analytics-python to `/v1/batch`, posthog to
`/batch/`, trackline to `/v1/batch`. Any POST outside `/_` counts the events in its body
(gzip aware): the length of `batch` in an object, of a top-level array, or one for any other
object. Each answer can be held back by an added latency, per request, so that several
requests in flight on several connections overlap the way they would against a distant API.

Counting means parsing every body, which would make the sink's own CPU part of what it
measures (on two cores, about a third of the fastest client's time). So a body is answered
as soon as it is read (plus the latency), kept with the time of its answer, and parsed only
when someone asks for the counts, or at once while a `/_wait` is waiting. The time reported for
the last event is still the time its answer went out.

It is asyncio on raw sockets, not an HTTP framework, so that its cost per request stays small
next to the client it measures; it runs in its own process (`python -m bench.sink`), prints
its port on the first line, and serves until killed. The runner drives it over HTTP:

- `POST /_reset?latency=SECONDS&expect=N`: zero the counters, set the added latency and the
  number of events `/_wait` waits for.
- `GET /_stats`: `{"events", "requests", "bytes", "last_at"}`; `last_at` is the
  `time.monotonic()` (system-wide on Linux, so comparable across processes) at which the
  answer carrying the `expect`-th event was sent (or the last answer, before that).
- `GET /_wait?timeout=SECONDS`: the same, once `expect` events were counted or the timeout ran
  out (`done` says which).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import time
import zlib
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson

_OK: Final = b"{}"
_MAX_HEADER_BYTES: Final = 64 * 1024


def count_events(body: bytes, content_encoding: str | None = None) -> int:
    """How many events one request body carries; 0 for a body that is not JSON."""
    if content_encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    elif content_encoding == "deflate":
        body = zlib.decompress(body)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if isinstance(document, dict):
        batch = document.get("batch")
        return len(batch) if isinstance(batch, list) else 1
    if isinstance(document, list):
        return len(document)
    return 0


class Counts:
    """What the sink has answered since the last reset, shared by every connection."""

    def __init__(self) -> None:
        self.reset(0.0, 0)

    def reset(self, latency: float, expect: int) -> None:
        self.latency = latency
        self.expect = expect
        self.events = 0
        self.requests = 0
        self.bytes = 0
        self.last_at = 0.0
        self.reached = asyncio.Event()
        self.waiting = 0
        #: Answered bodies not parsed yet: (time of the answer, body, content encoding).
        self._unparsed: list[tuple[float, bytes, str | None]] = []

    def answered(self, body: bytes, encoding: str | None) -> None:
        """Record one answered request; its events are counted later, see `settle`."""
        self.requests += 1
        self.bytes += len(body)
        self._unparsed.append((time.monotonic(), body, encoding))
        if self.waiting:
            self.settle()

    def settle(self) -> None:
        """Count the events of every body answered so far."""
        for answered_at, body, encoding in self._unparsed:
            self.events += count_events(body, encoding)
            if not self.reached.is_set():
                self.last_at = answered_at
                if self.expect and self.events >= self.expect:
                    self.reached.set()
        self._unparsed.clear()

    def snapshot(self, done: bool | None = None) -> dict[str, Any]:
        self.settle()
        snap: dict[str, Any] = {
            "events": self.events,
            "requests": self.requests,
            "bytes": self.bytes,
            "last_at": self.last_at,
        }
        if done is not None:
            snap["done"] = done
        return snap


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class SinkProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: Content-Length or chunked request bodies."""

    def __init__(self, counts: Counts) -> None:
        self._counts = counts
        self._data = bytearray()
        self._transport: asyncio.Transport | None = None
        self._free_at = 0.0  # answers on one connection leave in order
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._data += data
        while self._next_request():
            pass

    def _next_request(self) -> bool:
        data = self._data
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEADER_BYTES and self._transport is not None:
                self._transport.close()
            return False
        lines = bytes(data[:end]).decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(data, start)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            length = int(headers.get("content-length", "0"))
            if len(data) < start + length:
                return False
            body, consumed = bytes(data[start : start + length]), start + length
        del data[:consumed]
        self._handle(method, target, headers, body)
        return True

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        url = urlsplit(target)
        if url.path.startswith("/_"):
            task = asyncio.ensure_future(self._control(url.path, parse_qs(url.query)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self._counts.latency, self._free_at)
        self._free_at = at
        body = body if method == "POST" else b""
        encoding = headers.get("content-encoding")
        if at <= loop.time():
            self._answer(body, encoding)
        else:
            loop.call_at(at, self._answer, body, encoding)

    def _answer(self, body: bytes, encoding: str | None) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(_response("200 OK", _OK))
        self._counts.answered(body, encoding)

    async def _control(self, path: str, query: dict[str, list[str]]) -> None:
        counts = self._counts
        if path == "/_reset":
            counts.reset(float(query.get("latency", ["0"])[0]), int(query.get("expect", ["0"])[0]))
            answer = counts.snapshot()
        elif path == "/_wait":
            timeout = float(query.get("timeout", ["60"])[0])
            counts.settle()
            counts.waiting += 1
            try:
                await asyncio.wait_for(counts.reached.wait(), timeout)
                done = True
            except TimeoutError:
                done = False
            finally:
                counts.waiting -= 1
            answer = counts.snapshot(done)
        else:
            answer = counts.snapshot()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_response("200 OK", orjson.dumps(answer)))


def _dechunk(data: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body starting at `start`: (body, bytes consumed), or None when incomplete."""
    body = bytearray()
    position = start
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(data[position:line_end]).split(b";")[0], 16)
        chunk_start = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", line_end)
            return (bytes(body), trailer_end + 4) if trailer_end >= 0 else None
        if len(data) < chunk_start + size + 2:
            return None
        body += data[chunk_start : chunk_start + size]
        position = chunk_start + size + 2


async def serve(port: int, ready: asyncio.Future[int] | None = None) -> None:
    """Serve on 127.0.0.1:`port` (0 for any free port) forever."""
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counts), "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready is None:
        print(bound, flush=True)
    else:
        ready.set_result(bound)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
