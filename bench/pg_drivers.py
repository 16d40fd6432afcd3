"""psycopg 3 against asyncpg on the collector's write workload, to choose the PostgreSQL driver.

The workload is the collector's: 8 producers (as 8 HTTP connections would be), each handing
over a batch of 100 Segment-shaped rows and waiting for its commit before the next; unique
messageIds, inserted with dedupe (`ON CONFLICT DO NOTHING`) into a table with the store's
indexes, ids taken in blocks from a sequence, and the inserted ids returned (the store needs
them to credit each request and to publish live events).

Shapes measured, each on a fresh table:

- `group`: one writer thread takes every batch waiting and commits them in one transaction
  (the SQLite store's group commit), with several ways to send the rows:
  `copy` (COPY into a temporary table, then INSERT ... SELECT), `unnest` (one INSERT with one
  array parameter per column), `executemany` (one INSERT per row; psycopg runs it in pipeline
  mode), `values` (multi-row VALUES, SQLite's way).
- `pool`: every producer commits its own batch on its own connection (8 connections), so
  PostgreSQL works on several transactions at once.
- `pipeline` (psycopg): the group writer keeps the next group's statements in flight while
  the last commit is acknowledged.

For each: events/s, and CPU seconds per 100k events of this process and of the PostgreSQL
backends (from /proc), since on a small machine CPU is what bounds the collector.

Run: `python -m bench.pg_drivers [--events 100000] [--dsn postgresql://postgres@127.0.0.1/postgres]`
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from trackline.collector.ingest import Envelope, Row, process

COLUMNS = Row._fields
BLOCK = 4096
SCHEMA = f"""
CREATE SEQUENCE bench_block INCREMENT BY {BLOCK};
CREATE TABLE bench_events (
    id bigint PRIMARY KEY,
    message_id text NOT NULL UNIQUE,
    type text NOT NULL,
    user_id text,
    anonymous_id text,
    event text,
    source text NOT NULL,
    received_at text NOT NULL,
    timestamp text NOT NULL,
    body text NOT NULL
);
CREATE INDEX ON bench_events (type);
CREATE INDEX ON bench_events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX ON bench_events (anonymous_id) WHERE anonymous_id IS NOT NULL;
CREATE INDEX ON bench_events (event) WHERE event IS NOT NULL;
CREATE INDEX ON bench_events (received_at);
"""
#: The store's choice: no index on the six-valued type (reads walk ids newest first and filter),
#: a BRIN index on received_at (it grows with the id), btree where a filter is selective.
LEAN_SCHEMA = SCHEMA.replace("CREATE INDEX ON bench_events (type);\n", "").replace(
    "(received_at)", "USING brin (received_at)"
)
STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS staging (ord int, "
    + ", ".join(f"{c} text" for c in COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COLS = ", ".join(COLUMNS)
INSERT_FROM_STAGING = (
    f"INSERT INTO bench_events (id, {_COLS}) SELECT %s + ord, {_COLS} FROM staging "
    "ORDER BY ord ON CONFLICT DO NOTHING RETURNING id"
)
INSERT_UNNEST = (
    f"INSERT INTO bench_events (id, {_COLS}) SELECT %s + ord - 1, {_COLS} FROM "
    f"unnest({', '.join(['%s::text[]'] * len(COLUMNS))}) WITH ORDINALITY AS u({_COLS}, ord) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
INSERT_ONE = (
    f"INSERT INTO bench_events (id, {_COLS}) VALUES (%s, "
    + ", ".join(["%s"] * len(COLUMNS))
    + ") ON CONFLICT DO NOTHING RETURNING id"
)


def make_rows(events: int) -> list[Row]:
    """`events` rows as the collector makes them from Segment-shaped track calls."""
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    messages = [
        {
            "type": "track",
            "messageId": f"bench-{run}-{n}",
            "timestamp": stamp,
            "userId": f"user-{n % 1000:04d}",
            "event": "Item Purchased",
            "properties": {
                "plan": "pro",
                "revenue": 39.95,
                "currency": "EUR",
                "sku": f"sku-{n % 100:03d}",
                "quantity": n % 5 + 1,
            },
            "context": {"library": {"name": "bench", "version": "1"}},
        }
        for n in range(events)
    ]
    return process(Envelope(messages), source="bench-key", received_at=now).rows


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu(dsn: str, database: str) -> float:
    """CPU seconds of every backend connected to `database` (our writers)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        ]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


# -- writers ------------------------------------------------------------------------------


Batch = Sequence[Row]


class Writer:
    """Takes batches from producers; `submit(batch)` returns the ids inserted."""

    def start(self) -> None: ...

    def submit(self, batch: Batch) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None: ...


class GroupWriter(Writer):
    """One thread commits every batch waiting, in one transaction (`commit(rows) -> ids`)."""

    def __init__(self, commit: Callable[[list[Row]], list[int]], close: Callable[[], None]):
        self._commit = commit
        self._close = close
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.groups = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch) -> list[int]:
        future: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
        self._queue.put((batch, future))
        return future.result()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            while True:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)
                    break
                group.append(following)
            rows = [row for batch, _ in group for row in batch]
            self.groups += 1
            try:
                ids = self._commit(rows)
            except BaseException as exc:
                for _, future in group:
                    future.set_exception(exc)
                continue
            for _, future in group:
                future.set_result(ids)
        self._close()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


def psycopg_group(dsn: str, how: str) -> GroupWriter:
    conn = psycopg.connect(dsn)
    conn.execute(STAGING)
    conn.commit()

    def commit(rows: list[Row]) -> list[int]:
        with conn.transaction(), conn.cursor() as cur:
            ids: list[int] = []
            for start in range(0, len(rows), BLOCK):
                part = rows[start : start + BLOCK]
                (block,) = cur.execute("SELECT nextval('bench_block')").fetchone()  # type: ignore[misc]
                if how in ("copy", "copy-binary"):
                    binary = " (FORMAT BINARY)" if how == "copy-binary" else ""
                    with cur.copy(f"COPY staging (ord, {_COLS}) FROM STDIN{binary}") as copy:
                        if binary:
                            copy.set_types(["int4"] + ["text"] * len(COLUMNS))
                        for ordinal, row in enumerate(part):
                            copy.write_row((ordinal, *row))
                    cur.execute(INSERT_FROM_STAGING, (block,))
                    ids += [i for (i,) in cur.fetchall()]
                elif how in ("copy-direct", "copy-direct-notify"):
                    # Optimistic: straight into the table; a duplicate fails the COPY, and
                    # only then does the batch go through the staging table.
                    try:
                        with (
                            conn.transaction(),
                            cur.copy(
                                f"COPY bench_events (id, {_COLS}) FROM STDIN (FORMAT BINARY)"
                            ) as copy,
                        ):
                            copy.set_types(["int8"] + ["text"] * len(COLUMNS))
                            for ordinal, row in enumerate(part):
                                copy.write_row((block + ordinal, *row))
                        ids += range(block, block + len(part))
                        if how == "copy-direct-notify":
                            # What the store adds for live streams in other processes.
                            cur.execute("SELECT pg_notify('bench_events', %s)", (f"token {block}",))
                    except psycopg.errors.UniqueViolation:
                        with cur.copy(f"COPY staging (ord, {_COLS}) FROM STDIN") as copy:
                            for ordinal, row in enumerate(part):
                                copy.write_row((ordinal, *row))
                        cur.execute(INSERT_FROM_STAGING, (block,))
                        ids += [i for (i,) in cur.fetchall()]
                elif how in ("unnest", "unnest-binary"):
                    columns = [list(column) for column in zip(*part, strict=True)]
                    cur.execute(INSERT_UNNEST, (block, *columns), binary=how == "unnest-binary")
                    ids += [i for (i,) in cur.fetchall()]
                elif how == "executemany":
                    cur.executemany(
                        INSERT_ONE,
                        [(block + n, *row) for n, row in enumerate(part)],
                        returning=True,
                    )
                    while True:
                        found = cur.fetchone()
                        if found is not None:
                            ids.append(found[0])
                        if not cur.nextset():
                            break
                elif how == "values":
                    marks = "(" + ", ".join(["%s"] * (len(COLUMNS) + 1)) + ")"
                    sql = (
                        f"INSERT INTO bench_events (id, {_COLS}) VALUES "
                        + ", ".join([marks] * len(part))
                        + " ON CONFLICT DO NOTHING RETURNING id"
                    )
                    params = [v for n, row in enumerate(part) for v in (block + n, *row)]
                    cur.execute(sql, params)
                    ids += [i for (i,) in cur.fetchall()]
                else:
                    raise ValueError(how)
            return ids

    return GroupWriter(commit, conn.close)


def psycopg_pipelined(dsn: str) -> GroupWriter:
    """Group commit with the unnest statement sent in pipeline mode: nextval, insert and
    commit go out in one round trip instead of three."""
    conn = psycopg.connect(dsn, autocommit=True)

    def commit(rows: list[Row]) -> list[int]:
        return pipelined_commit(conn, rows)

    return GroupWriter(commit, conn.close)


INSERT_UNNEST_NEXTVAL = INSERT_UNNEST.replace(
    "%s + ord - 1", "(SELECT nextval('bench_block')) + ord - 1", 1
)


def pipelined_commit(conn: psycopg.Connection[Any], rows: Sequence[Row]) -> list[int]:
    """BEGIN, the insert (taking its own id block) and COMMIT in one round trip."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    with conn.cursor() as cur:
        with conn.pipeline():
            conn.execute("BEGIN")
            cur.execute(INSERT_UNNEST_NEXTVAL, columns)
            conn.execute("COMMIT")
        return [i for (i,) in cur.fetchall()]


class PsycopgPool(Writer):
    """Each producer thread commits its own batch on its own connection."""

    def __init__(self, dsn: str, how: str) -> None:
        self._dsn = dsn
        self._how = how
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def submit(self, batch: Batch) -> list[int]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = psycopg.connect(self._dsn, autocommit=True)
            with self._lock:
                self._conns.append(conn)
        if self._how == "pipeline":
            return pipelined_commit(conn, batch)
        columns = [list(column) for column in zip(*batch, strict=True)]
        with conn.transaction(), conn.cursor() as cur:
            (block,) = cur.execute("SELECT nextval('bench_block')").fetchone()  # type: ignore[misc]
            cur.execute(INSERT_UNNEST, (block, *columns))
            return [i for (i,) in cur.fetchall()]

    def stop(self) -> None:
        for conn in self._conns:
            conn.close()


class AsyncpgWriter(Writer):
    """asyncpg on its own event loop in a thread: group commit on one connection, or a pool
    where every producer's batch is its own transaction."""

    def __init__(self, dsn: str, how: str, pool: bool) -> None:
        self._dsn = dsn
        self._how = how
        self._pool = pool
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._pending: list[tuple[Batch, asyncio.Future[list[int]]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.groups = 0

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        import asyncpg

        self._thread.start()

        async def setup() -> None:
            if self._pool:
                self._conns = await asyncpg.create_pool(self._dsn, min_size=8, max_size=8)
            else:
                self._conn = await asyncpg.connect(self._dsn)
                await self._conn.execute(STAGING)
                self._wake = asyncio.Event()
                self._task = asyncio.create_task(self._drain())

        self._call(setup())

    async def _commit(self, conn: Any, rows: Sequence[Row]) -> list[int]:
        ids: list[int] = []
        async with conn.transaction():
            for start in range(0, len(rows), BLOCK):
                part = rows[start : start + BLOCK]
                block = await conn.fetchval("SELECT nextval('bench_block')")
                if self._how == "copy":
                    await conn.copy_records_to_table(
                        "staging",
                        records=[(n, *row) for n, row in enumerate(part)],
                        columns=["ord", *COLUMNS],
                    )
                    sql = INSERT_FROM_STAGING.replace("%s", "$1")
                    ids += [r[0] for r in await conn.fetch(sql, block)]
                elif self._how == "unnest":
                    columns = [list(column) for column in zip(*part, strict=True)]
                    sql = INSERT_UNNEST
                    for n in range(len(COLUMNS) + 1):
                        sql = sql.replace("%s", f"${n + 1}", 1)
                    ids += [r[0] for r in await conn.fetch(sql, block, *columns)]
                elif self._how == "executemany":
                    sql = INSERT_ONE.replace(" RETURNING id", "")
                    for n in range(len(COLUMNS) + 1):
                        sql = sql.replace("%s", f"${n + 1}", 1)
                    await conn.executemany(sql, [(block + n, *row) for n, row in enumerate(part)])
                else:
                    raise ValueError(self._how)
        return ids

    async def _drain(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._pending = self._pending, []
            if not group:
                continue
            self.groups += 1
            rows = [row for batch, _ in group for row in batch]
            try:
                ids = await self._commit(self._conn, rows)
            except Exception as exc:
                for _, future in group:
                    future.set_exception(exc)
                continue
            for _, future in group:
                future.set_result(ids)
            if self._pending:
                self._wake.set()

    async def _submit(self, batch: Batch) -> list[int]:
        if self._pool:
            async with self._conns.acquire() as conn:
                return await self._commit(conn, batch)
        future: asyncio.Future[list[int]] = self._loop.create_future()
        self._pending.append((batch, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    def submit(self, batch: Batch) -> list[int]:
        return self._call(self._submit(batch))  # type: ignore[no-any-return]

    def stop(self) -> None:
        async def teardown() -> None:
            if self._pool:
                await self._conns.close()
            else:
                assert self._task is not None
                self._task.cancel()
                await self._conn.close()

        self._call(teardown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


# -- the run ------------------------------------------------------------------------------


def build(name: str, dsn: str) -> Writer:
    library, shape, how = name.split(":")
    if library == "psycopg":
        if shape == "group":
            return psycopg_group(dsn, how)
        if shape == "pipeline":
            return psycopg_pipelined(dsn)
        return PsycopgPool(dsn, how)
    return AsyncpgWriter(dsn, how, pool=shape == "pool")


VARIANTS = (
    "psycopg:group:copy",
    "psycopg:group:copy-binary",
    "psycopg:group:copy-direct",
    "psycopg:group:copy-direct-notify",
    "psycopg:group:unnest",
    "psycopg:group:unnest-binary",
    "psycopg:group:executemany",
    "psycopg:group:values",
    "psycopg:pipeline:unnest",
    "psycopg:pool:unnest",
    "psycopg:pool:pipeline",
    "asyncpg:group:copy",
    "asyncpg:group:unnest",
    "asyncpg:group:executemany",
    "asyncpg:pool:unnest",
)


def run_one(
    name: str, admin: str, rows: list[Row], producers: int, batch: int, lean: bool = False
) -> dict[str, Any]:
    database = f"trackline_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    dsn = admin.rsplit("/", 1)[0] + "/" + database
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(LEAN_SCHEMA if lean else SCHEMA)
        writer = build(name, dsn)
        writer.start()
        batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        work: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        for part in batches:
            work.put(part)
        latencies: list[float] = []
        errors: list[BaseException] = []

        def produce() -> None:
            while True:
                try:
                    part = work.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    writer.submit(part)
                except Exception as exc:
                    errors.append(exc)
                    return
                latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        own_before = cpu_seconds(os.getpid())
        pg_before = backend_cpu(admin, database)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        own = cpu_seconds(os.getpid()) - own_before
        pg = backend_cpu(admin, database) - pg_before
        writer.stop()
        if errors:
            raise errors[0]
        with psycopg.connect(dsn) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM bench_events").fetchone()  # type: ignore[misc]
        latencies.sort()
        per_100k = 100_000 / len(rows)
        return {
            "variant": name + (" lean" if lean else ""),
            "events_per_s": round(len(rows) / seconds),
            "stored": stored,
            "python_cpu_s_per_100k": round(own * per_100k, 2),
            "postgres_cpu_s_per_100k": round(pg * per_100k, 2),
            "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 1),
            "groups": getattr(writer, "groups", None),
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument("--lean", action="store_true", help="the store's leaner index set")
    args = parser.parse_args()
    rows = make_rows(args.events)
    for rep in range(args.reps):
        for name in args.only:
            fresh = [row._replace(message_id=f"{row.message_id}-{rep}") for row in rows]
            result = run_one(name, args.dsn, fresh, args.producers, args.batch, args.lean)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
