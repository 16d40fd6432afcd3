"""Load generator for the collector: several keep-alive connections posting valid batches.

Every request is built before the clock starts (unique messageIds, Basic auth, JSON bodies of
`--batch` track messages), so the generator spends its time on the sockets only: asyncio on
raw streams, one request in flight per connection. It prints one JSON line: events answered
200, requests refused, the seconds from the first byte sent to the last answer read, and the
median and 99th percentile of each request's time from sending to its answer.
Because the collector answers 200 only after the commit, every event answered 200 is stored.

`--ids uuid` gives each message a random UUID messageId and anonymousId and a userId drawn
from a million, as Segment's libraries send them (the default ids share a prefix and sort
together, which is kinder to an index than real traffic). `--seconds` stops sending new
requests after that long (`--events` is then the most that may be sent).

With `--rate`, requests are due at a steady rate of events/s (still one in flight per
connection), and each request's time counts from when it was due.

Run: `python -m bench.load --url http://127.0.0.1:8765 [--connections 8] [--batch 100]
[--rate EVENTS_PER_S] [--ids uuid] [--seconds S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import random
import time
import uuid
from urllib.parse import urlsplit

import orjson

from bench.peers import EVENT, WRITE_KEY

#: Seconds a request may wait for its answer before it is counted as not answered.
ANSWER_SECONDS = 60.0


#: Distinct userIds of `--ids uuid`.
USERS = 1_000_000


def _ids(run: str, number: int, uuids: bool) -> dict[str, str]:
    """A message's ids: sequential within the run, or random as real traffic has them."""
    if uuids:
        return {
            "messageId": str(uuid.uuid4()),
            "userId": f"user-{random.randrange(USERS)}",
            "anonymousId": str(uuid.uuid4()),
        }
    return {"messageId": f"load-{run}-{number}", "userId": f"user-{number % 1000:04d}"}


def build_requests(
    host: str, events: int, batch: int, uuids: bool = False
) -> list[tuple[bytes, int]]:
    """`(raw HTTP request, events in it)` for `events` events in batches of `batch`."""
    run = os.urandom(6).hex()
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    requests = []
    for first in range(0, events, batch):
        count = min(batch, events - first)
        messages = [
            {
                "type": "track",
                **_ids(run, first + index, uuids),
                "timestamp": now,
                "event": EVENT,
                "properties": {
                    "plan": "pro",
                    "revenue": 39.95,
                    "currency": "EUR",
                    "sku": f"sku-{index % 100:03d}",
                    "quantity": index % 5 + 1,
                },
                "context": {"library": {"name": "bench-load", "version": "1"}},
            }
            for index in range(count)
        ]
        body = orjson.dumps({"batch": messages, "sentAt": now})
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append((head.encode() + body, count))
    return requests


class _Pace:
    """When each request is due at a steady `rate` of events/s (None: at once), across all
    connections, so a run can offer a fixed fraction of what the collector absorbs."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.perf_counter()
        self.offered = 0

    async def wait(self, count: int) -> float:
        """Sleep until the next `count` events are due; returns when they were due."""
        if self.rate is None:
            return time.perf_counter()
        due = self.start + self.offered / self.rate
        self.offered += count
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return due


async def _connection(
    address: tuple[str, int],
    pending: collections.deque[tuple[bytes, int]],
    totals: collections.Counter[str],
    latencies: list[float],
    deadline: float,
    pace: _Pace,
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        while pending and time.monotonic() < deadline:
            request, count = pending.popleft()
            # Paced, the time counts from when the request was due, not when a busy
            # connection got to send it: a late start is waiting the client sees.
            sent = await pace.wait(count)
            writer.write(request)
            try:
                async with asyncio.timeout(ANSWER_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    status = int(lines[0].split(" ", 2)[1])
                    length = 0
                    for line in lines[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    await reader.readexactly(length)
            except TimeoutError:
                # No answer: counted, and the connection is replaced (a run never hangs).
                totals["refused"] += 1
                totals["no_answer"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(*address)
                continue
            latencies.append(time.perf_counter() - sent)
            if status == 200:
                totals["events"] += count
            else:
                totals["refused"] += 1
                totals[f"status_{status}"] += 1
    finally:
        writer.close()


async def run(
    url: str,
    connections: int,
    events: int,
    batch: int,
    rate: float | None = None,
    *,
    uuids: bool = False,
    seconds: float | None = None,
) -> dict[str, object]:
    """Post `events` events over `connections` connections (at `rate` events/s, or as fast as
    they are answered; for `seconds` at most); returns the totals and timing."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    pending = collections.deque(build_requests(parts.netloc, events, batch, uuids))
    totals: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    start = time.monotonic()
    cpu_start = time.process_time()
    deadline = start + seconds if seconds is not None else float("inf")
    pace = _Pace(rate)
    await asyncio.gather(
        *(
            _connection(address, pending, totals, latencies, deadline, pace)
            for _ in range(connections)
        )
    )
    requests = len(latencies) + totals["no_answer"]
    seconds = time.monotonic() - start
    cpu_seconds = time.process_time() - cpu_start
    latencies.sort()
    return {
        "events": totals["events"],
        "requests": requests,
        "refused": totals["refused"],
        "statuses": {k: v for k, v in totals.items() if k.startswith("status_")},
        "no_answer": totals["no_answer"],
        "seconds": seconds,
        "throughput": totals["events"] / seconds,
        # This process's CPU while sending (building the requests before is not counted).
        "cpu_seconds": cpu_seconds,
        "connections": connections,
        "batch": batch,
        "rate": rate,
        # From the request's first byte sent to its answer read: the acknowledgement time.
        "ack_p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else None,
        "ack_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the collector, e.g. http://127.0.0.1:8765")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--rate", type=float, default=None, help="offer this many events/s (default: flat out)"
    )
    parser.add_argument("--ids", choices=("sequential", "uuid"), default="sequential")
    parser.add_argument("--seconds", type=float, help="stop sending after this long")
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.url,
            args.connections,
            args.events,
            args.batch,
            args.rate,
            uuids=args.ids == "uuid",
            seconds=args.seconds,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
