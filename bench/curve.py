"""How the collector's SQLite write rate holds as the store grows: the sustained-rate curve.

For each size (events already stored) and each variant of the code (a `src` directory, so
that two versions are compared in the same run, on the same load), a store is filled to that
size directly with SQL (bulk inserts of Segment-shaped rows with random UUID ids, through the
schema the variant's own store creates), then `trackline collector` serves it in its own
process while `bench.load` posts to it for a fixed time: 8 keep-alive connections, batches of
100, random UUID messageIds and anonymousIds, userIds drawn from a million. Recorded per
point: events/s stored (every 200 is a commit), the acknowledgement time of each request
(p50, p99), the file's size (database and write-ahead log) and the collector's RSS at the end.

Sizes are filled in increasing order on one file per variant: each point starts where the
last one ended (prefilled rows plus what the load stored).

Run: `python -m bench.curve [--sizes 0,1000000,3000000] [--seconds 15]
[--variant name=path/to/src ...] [--save]`
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.collector_scale import tree
from bench.peers import WRITE_KEY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: Rows per prefill transaction.
FILL_CHUNK = 100_000
#: Names of track events, pages and screens in the prefill (events are about a few things).
EVENT_NAMES = [f"Event {n}" for n in range(40)]
PAGE_NAMES = [f"Page {n}" for n in range(20)]
#: userIds of prefilled events are drawn from this many, as in `bench.load --ids uuid`.
USERS = 1_000_000
#: The most events/s a load run is prepared for (its requests are built before the clock).
MAX_RATE = 60_000


@dataclasses.dataclass(frozen=True)
class Variant:
    """A version of the code: its name in the table and the `src` directory it runs from."""

    name: str
    src: Path


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def fake_rows(
    count: int, source: str, end: dt.datetime, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """`count` Segment-shaped rows (the columns of `ingest.Row`), received over the hour
    before `end`, in order: random UUID messageIds and anonymousIds (one per ten events),
    userIds from a million for three events in four, a mix of tracks, pages, identifies."""
    start = end - dt.timedelta(hours=1)
    step = dt.timedelta(hours=1) / max(1, count)
    raw = os.urandom(16 * count)
    for n in range(count):
        message_id = _uuid(raw[16 * n : 16 * n + 16])
        anonymous_id = _uuid(hashlib.md5(b"%d" % rng.randrange(count // 10 + 1)).digest())
        user_id = f"user-{rng.randrange(USERS)}" if rng.random() < 0.75 else None
        draw = rng.random()
        received = _timestamp(start + step * n)
        message: dict[str, Any] = {
            "messageId": message_id,
            "anonymousId": anonymous_id,
            "timestamp": received,
            "sentAt": received,
            "receivedAt": received,
            "originalTimestamp": received,
            "context": {
                "library": {"name": "analytics-python", "version": "2.3.3"},
                "ip": f"10.0.{n % 256}.{n // 256 % 256}",
            },
        }
        if user_id is not None:
            message["userId"] = user_id
        if draw < 0.8:
            kind, name = "track", rng.choice(EVENT_NAMES)
            message.update(
                type=kind,
                event=name,
                properties={"plan": "pro", "revenue": 39.95, "sku": f"sku-{n % 100}"},
            )
        elif draw < 0.95:
            kind, name = "page", rng.choice(PAGE_NAMES)
            message.update(type=kind, name=name, properties={"path": f"/p/{n % 500}"})
        else:
            kind, name = "identify", None
            message.update(type=kind, traits={"plan": "pro", "email": f"u{n}@example.com"})
        body = orjson.dumps(message).decode()
        yield (message_id, kind, user_id, anonymous_id, name, source, received, received, body)


def _create(variant: Variant, path: Path) -> None:
    """Let the variant's own store create (or migrate) the file: its schema, its pragmas."""
    code = (
        "import sys; from trackline.collector.store.sqlite import SQLiteStore; "
        "SQLiteStore(sys.argv[1]).close()"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path)], env=_env(variant), check=True, timeout=3600
    )


def _env(variant: Variant) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{variant.src}{os.pathsep}{ROOT}"}


def stored(path: Path) -> int:
    """Rows in the events table."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        return int(count)


def prefill(variant: Variant, path: Path, size: int, rng: random.Random) -> float:
    """Bring the store at `path` to `size` events with bulk SQL; returns the seconds taken."""
    began = time.monotonic()
    _create(variant, path)
    missing = size - stored(path)
    if missing <= 0:
        return 0.0
    from trackline.collector.access.keys import key_id
    from trackline.collector.store.sqlite_keys import MessageKeys

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # The store's schema and indexes as they are, random inserts and all: only the
        # durability is relaxed (a bench file), and the cache made large enough to hold it.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -4000000")
        (secret,) = conn.execute("SELECT value FROM meta WHERE name = 'key_id_secret'").fetchone()
        source = key_id(bytes(secret), WRITE_KEY)
        columns = (
            "message_id, type, user_id, anonymous_id, event, source, received_at, timestamp, body"
        )
        # Schema 5 finds events by a keyed hash of the messageId; earlier ones by the id.
        keyed = "message_key" in {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if keyed:
            columns += ", message_key"
        marks = ", ".join("?" * len(columns.split(",")))
        insert = f"INSERT INTO events ({columns}) VALUES ({marks})"
        end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        while missing > 0:
            count = min(FILL_CHUNK, missing)
            (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
            conn.execute("BEGIN")
            made = fake_rows(count, source, end, rng)
            if keyed:
                keys = MessageKeys(bytes(secret))
                made = ((*row, keys(row[0])) for row in made)
            conn.executemany(insert, made)
            conn.execute(
                "INSERT INTO event_counts (type, source, n) SELECT type, source, count(*) "
                "FROM events WHERE id > ? GROUP BY type, source "
                "ON CONFLICT (type, source) DO UPDATE SET n = n + excluded.n",
                (last,),
            )
            conn.execute("COMMIT")
            missing -= count
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return time.monotonic() - began


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of `pids`, MB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def file_mb(path: Path) -> float:
    """The database and its write-ahead log, MB."""
    sizes = [p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    return sum(sizes) / 1e6


@contextlib.contextmanager
def collector(variant: Variant, path: Path) -> Iterator[tuple[str, int]]:
    """`trackline collector` of `variant` serving `path`; yields (URL, pid)."""
    command = [sys.executable, "-m", "trackline", "collector", "--db", str(path)]
    command += ["--port", "0", "--log-level", "WARNING"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=_env(variant), stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        time.sleep(1.0)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(120)


def measure(variant: Variant, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One point of the curve: the load against the collector serving `path` as it is."""
    before = stored(path)
    with collector(variant, path) as (url, pid):
        command = [sys.executable, "-m", "bench.load", "--url", url, "--ids", "uuid"]
        command += ["--seconds", str(args.seconds), "--events", str(MAX_RATE * int(args.seconds))]
        command += ["--connections", str(args.connections), "--batch", str(args.batch)]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800
        )
        rss = rss_mb(tree(pid))
    load = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "variant": variant.name,
        "stored_before": before,
        "events_per_s": round(load["throughput"]),
        "refused": load["refused"],
        "ack_p50_ms": round(load["ack_p50_ms"], 1),
        "ack_p99_ms": round(load["ack_p99_ms"], 1),
        "file_mb": round(file_mb(path)),
        "rss_mb": round(rss),
        "load_average": round(os.getloadavg()[0], 2),
    }


def table(results: Sequence[dict[str, Any]], sizes: Sequence[int]) -> str:
    """A markdown table: one row per variant and size (medians over repetitions), the rate
    also as a share of the same variant's rate on the smallest size."""
    lines = [
        "| variant | events stored before | events/s stored | of the empty rate "
        "| ack p50 ms | ack p99 ms | file MB | collector RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    variants = list(dict.fromkeys(r["variant"] for r in results))
    for name in variants:
        first: float | None = None
        for size in sizes:
            runs = [r for r in results if r["variant"] == name and r["size"] == size]
            if not runs:
                continue
            med = {k: statistics.median(r[k] for r in runs) for k in _NUMBERS}
            first = med["events_per_s"] if first is None else first
            share = med["events_per_s"] / first if first else 0.0
            lines.append(
                f"| {name} | {_size(size)} | {med['events_per_s']:,.0f} | {share:.0%} "
                f"| {med['ack_p50_ms']:.1f} | {med['ack_p99_ms']:.1f} "
                f"| {med['file_mb']:,.0f} | {med['rss_mb']:,.0f} |"
            )
    return "\n".join(lines)


_NUMBERS = ("events_per_s", "ack_p50_ms", "ack_p99_ms", "file_mb", "rss_mb")


def _size(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size:,}"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000000,3000000", help="comma separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per run")
    parser.add_argument("--reps", type=int, default=1, help="load runs per point")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name=path of a src directory (repeatable); default: this checkout's src",
    )
    parser.add_argument("--dir", help="where the stores go (default: a temporary directory)")
    parser.add_argument("--save", action="store_true", help="write bench/results/curve.{md,json}")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    variants = []
    for text in args.variant or [f"current={ROOT / 'src'}"]:
        name, _, src = text.partition("=")
        variants.append(Variant(name, Path(src).resolve()))
    args.variants = variants
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Stopped with SIGTERM, still stop the collector it started (its `finally`).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    rng = random.Random(17)
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        directory = args.dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="trackline-curve-")
        )
        Path(directory).mkdir(parents=True, exist_ok=True)
        paths = {v.name: Path(directory) / f"curve-{v.name}.sqlite3" for v in args.variants}
        for size in args.sizes:
            for variant in args.variants:
                path = paths[variant.name]
                seconds = prefill(variant, path, size, rng)
                print(
                    f"{variant.name}: {stored(path):,} stored ({seconds:.0f} s to fill)", flush=True
                )
                for _ in range(args.reps):
                    result = {"size": size, **measure(variant, path, args)}
                    results.append(result)
                    print(json.dumps(result), flush=True)
    load_after = os.getloadavg()
    text = table(results, args.sizes)
    command = "python -m bench.curve " + " ".join(args.argv)
    report = "\n".join(
        [
            "# Collector: the SQLite write rate as the store grows",
            "",
            f"Command: `{command.strip()}`. Machine: {os.cpu_count()} CPUs, {started}; load "
            f"average {', '.join(f'{a:.2f}' for a in load_before)} at the start and "
            f"{', '.join(f'{a:.2f}' for a in load_after)} at the end (other work was running "
            f"on the same machine). Each point: {args.seconds:g} s of load, "
            f"{args.connections} connections, batches of {args.batch}, random UUID ids; "
            f"median of {args.reps}.",
            "",
            text,
            "",
        ]
    )
    print(report, flush=True)
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "curve.md").write_text(report)
        (RESULTS / "curve.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
