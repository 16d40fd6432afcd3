"""Delivery jobs on the PostgreSQL store: what queueing costs at ingest, and how fast jobs are
claimed and settled (the store's side of a destination's router; no destination is called).

1. Ingest: `--events` events written in batches of 100 by 8 threads, with no route and then
   with one destination per event, on fresh databases: events/s and PostgreSQL CPU.
2. Delivery: `--workers` threads (one store each, as separate processes would be) claim up to
   `--claim` jobs at a time and settle them delivered, until the queue is empty: jobs/s.

Run: `python -m bench.pg_jobs [--events 50000] [--workers 2] [--claim 500]`
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import time
import uuid

import psycopg

from bench.pg_drivers import backend_cpu, make_rows
from trackline.collector.store import Outcome, Settlement
from trackline.collector.store.postgres import PostgresStore

ADMIN = os.environ.get("TRACKLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def fresh() -> tuple[str, str]:
    name = f"trackline_jobs_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ingest(store: PostgresStore, rows: list, routed: bool) -> float:  # type: ignore[type-arg]
    batches = [rows[i : i + 100] for i in range(0, len(rows), 100)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda part: store.write(part, routes=[("Hook",)] * len(part) if routed else None),
                batches,
            )
        )
    return time.perf_counter() - started


def deliver(url: str, workers: int, claim: int) -> tuple[int, float]:
    stores = [PostgresStore(url) for _ in range(workers)]

    def work(store: PostgresStore) -> int:
        done = 0
        while jobs := store.claim("Hook", claim, 60.0):
            done += store.settle([Settlement(job, Outcome.DELIVERED) for job in jobs])
        return done

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        delivered = sum(pool.map(work, stores))
    seconds = time.perf_counter() - started
    for store in stores:
        store.close()
    return delivered, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--claim", type=int, default=500)
    args = parser.parse_args()
    for routed in (False, True):
        url, name = fresh()
        try:
            with PostgresStore(url) as store:
                before = backend_cpu(ADMIN, name)
                seconds = ingest(store, make_rows(args.events), routed)
                cpu = backend_cpu(ADMIN, name) - before
            result = {
                "ingest": "one destination per event" if routed else "no destination",
                "events_per_s": round(args.events / seconds),
                "postgres_cpu_s_per_100k": round(cpu * 100_000 / args.events, 2),
            }
            if routed:
                for workers in sorted({1, args.workers}):
                    if workers > 1:  # the queue again, for a second round of workers
                        with PostgresStore(url) as store:
                            store.replay("Hook")
                    delivered, seconds = deliver(url, workers, args.claim)
                    result[f"jobs_per_s_{workers}_workers"] = round(delivered / seconds)
            print(json.dumps(result), flush=True)
        finally:
            drop(name)


if __name__ == "__main__":
    main()
