"""How fast an event stored by one collector process reaches the live stream of another
(PostgreSQL store: LISTEN/NOTIFY with the id blocks of each transaction, rows read back by
the listening process).

Two stores on one fresh database stand for two processes (each has its own connections and
threads). One subscribes to its hub; the other writes batches of `--batch` events, one every
`--interval` seconds, for `--seconds`. For each batch: the time from the write's commit (its
`write()` returning) to the subscriber getting it, as p50/p99/max, and whether every event
arrived once.

Run: `python -m bench.pg_live [--seconds 5] [--batch 100] [--interval 0.01]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime

import orjson
import psycopg

from trackline.collector.ingest import Envelope, process
from trackline.collector.store.postgres import PostgresStore

ADMIN = os.environ.get("TRACKLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def batch(n: int, size: int) -> list:  # type: ignore[type-arg]
    messages = [
        {"type": "track", "userId": f"u{i % 100}", "event": "Live", "messageId": f"live-{n}-{i}"}
        for i in range(size)
    ]
    return process(Envelope(messages), source="bench", received_at=datetime.now(UTC)).rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    name = f"trackline_live_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        watcher, writer = PostgresStore(url), PostgresStore(url)
        watcher.listening.wait(10)
        committed: dict[str, float] = {}
        arrived: dict[str, float] = {}
        done = threading.Event()

        async def watch() -> None:
            subscription = watcher.hub.subscribe()
            while not done.is_set() or len(arrived) < len(committed):
                news = await subscription.next(timeout=1.0)
                if isinstance(news, list):
                    now = time.perf_counter()
                    for event in news:
                        first = orjson.loads(event.body)["messageId"].rsplit("-", 1)[0]
                        arrived.setdefault(first, now)
                elif news is None:
                    return
                if done.is_set() and len(arrived) >= len(committed):
                    return

        thread = threading.Thread(target=asyncio.run, args=(watch(),))
        thread.start()
        time.sleep(0.5)
        count = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            rows = batch(count, args.batch)
            writer.write(rows)
            committed[f"live-{count}"] = time.perf_counter()
            count += 1
            time.sleep(args.interval)
        done.set()
        thread.join(30)
        delays = sorted(arrived[key] - committed[key] for key in committed if key in arrived)
        result = {
            "batches": count,
            "arrived": len(delays),
            "p50_ms": round(delays[len(delays) // 2] * 1e3, 2) if delays else None,
            "p99_ms": round(delays[int(len(delays) * 0.99)] * 1e3, 2) if delays else None,
            "max_ms": round(delays[-1] * 1e3, 2) if delays else None,
        }
        print(json.dumps(result), flush=True)
        writer.close()
        watcher.close()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
