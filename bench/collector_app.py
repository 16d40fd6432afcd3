"""What the collector's app costs per ingest request, without the network: the ASGI app is
called directly with a ready request, and the access layer before routing (`Guard`) alone.

The HTTP load generator (`bench.load`) measures the whole server; this isolates the app's own
cost per request, where the security checks (Host, Origin, write key, key id, places) live.
An empty batch is the request's fixed cost (no commit); a batch of 100 adds validation and
the commit.

Run: `python -m bench.collector_app [--requests 5000] [--repeat 5]`; one JSON line per case,
the best of `--repeat` runs in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from trackline.collector import create_app
from trackline.collector.access import Clients, Guard, Hosts
from trackline.collector.store import SQLiteStore

Call = Callable[[], Awaitable[None]]


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/batch",
        "raw_path": b"/v1/batch",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8765),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8765"),
            (b"authorization", b"Basic " + base64.b64encode(b"bench-key:")),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


def _batch(size: int, run: int) -> bytes:
    messages = [
        {"type": "track", "userId": f"u-{n}", "event": "Item Purchased", "messageId": f"{run}-{n}"}
        for n in range(size)
    ]
    return orjson.dumps({"batch": messages})


async def _best(call: Callable[[int], Awaitable[None]], requests: int, repeat: int) -> float:
    for n in range(min(requests, 500)):
        await call(-n - 1)  # warm-up
    best = float("inf")
    for rep in range(repeat):
        started = time.perf_counter()
        for n in range(requests):
            await call(rep * requests + n)
        best = min(best, (time.perf_counter() - started) / requests)
    return best * 1e6


async def _measure(requests: int, repeat: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "bench.sqlite3")
        app = create_app(store)

        async def discard(message: Any) -> None:
            return None

        for size in (0, 100):

            async def ingest(n: int, size: int = size) -> None:
                body = _batch(size, n) if size else b'{"batch":[]}'

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                await app(_scope(body), receive, discard)

            cost = await _best(ingest, requests if not size else requests // 10, repeat)
            results.append({"case": f"ingest, batch of {size}", "us_per_request": round(cost, 1)})
        store.close()

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(bare, hosts=Hosts("127.0.0.1"), clients=Clients())
    scope = _scope(b"")
    for name, app_under_test in (("bare ASGI app", bare), ("Guard + bare ASGI app", guard)):

        async def call(n: int, app_under_test: Any = app_under_test) -> None:
            await app_under_test(dict(scope), None, discard)

        cost = await _best(call, requests * 4, repeat)
        results.append({"case": name, "us_per_request": round(cost, 2)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for result in asyncio.run(_measure(args.requests, args.repeat)):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
