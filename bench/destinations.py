"""Benchmarks of the collector's destinations; writes bench/results/destinations.{json,md}.

Run from the repository root (the warehouse scenario needs PostgreSQL on 127.0.0.1:5432):

    python -m bench.destinations              # 50,000 events per drain, 100,000 per ingest run
    python -m bench.destinations --quick      # a smoke run

Scenarios, each with `trackline collector` in its own process on a fresh database:

- drains: the events are stored first (by the load generator, `bench.load`, with no
  destination configured); the collector is then started with one destination and asked to
  replay them (`POST /api/destinations/NAME/replay`); the figure is events delivered per second
  from the replay request until the last one was delivered (the replay reading and queueing
  the stored events is included, and delivery starts while it runs): a webhook with
  `batch_size = 100` and a tracking-api forward, both to the counting sink (`bench.sink`, its
  own process), and
  the postgres warehouse (rows per second: a track is a `tracks` row and an event-table row);
- ingest: the load generator against a collector without destinations, then against one
  routing every event to three healthy destinations (webhook with batches of 100 and
  tracking-api to the sink, NDJSON files), which deliver while ingest runs; the ratio of the
  two is the cost of routing to ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import urllib3

from bench import load

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results"
PG_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS: Final = {
    "webhook": 20_000.0,
    "tracking-api": 40_000.0,
    "warehouse": 20_000.0,
    "ingest_ratio": 0.70,
}
HTTP: Final = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=600))


@contextlib.contextmanager
def sink() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sink"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def collector(database: Path, config: str | None = None) -> Iterator[str]:
    command = [sys.executable, "-m", "trackline", "collector", "--db", str(database)]
    command += ["--port", "0", "--log-level", "WARNING"]
    if config is not None:
        path = database.with_suffix(".toml")
        path.write_text(config)
        command += ["--config", str(path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" on ", 1)[1].split()[0]
        yield url
    finally:
        process.terminate()
        process.wait(60)


def destinations(url: str) -> list[dict[str, Any]]:
    return json.loads(HTTP.request("GET", url + "/api/destinations").data)  # type: ignore[no-any-return]


def wait_drained(url: str, name: str, total: int, timeout: float = 600.0) -> float:
    """Wait until `name` delivered `total`; returns the monotonic time it was seen done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next(r for r in destinations(url) if r["name"] == name)
        if row["delivered"] + row["failed"] >= total:
            if row["failed"]:
                raise RuntimeError(f"{name}: {row['failed']} failed: {row['last_error']}")
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not drain in {timeout} s")


def store_events(database: Path, events: int) -> None:
    with collector(database) as url:
        result = asyncio.run(load.run(url, 8, events, 100))
        assert result["events"] == events, result


def toml(name: str, kind: str, **settings: Any) -> str:
    lines = ["[[destination]]", f'name = "{name}"', f'kind = "{kind}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def drain(
    directory: Path, events: int, name: str, config: str, sink_url: str | None
) -> dict[str, Any]:
    database = directory / f"{name}-{uuid.uuid4().hex[:6]}.sqlite3"
    store_events(database, events)
    if sink_url is not None:
        HTTP.request("POST", f"{sink_url}/_reset?latency=0&expect={events}")
    with collector(database, config) as url:
        started = time.monotonic()
        answer = json.loads(HTTP.request("POST", f"{url}/api/destinations/{name}/replay").data)
        queued_at = time.monotonic()
        assert answer["queued"] == events, answer
        if sink_url is not None:
            stats = json.loads(HTTP.request("GET", f"{sink_url}/_wait?timeout=600").data)
            assert stats["events"] >= events, stats
            done = stats["last_at"]
            wait_drained(url, name, events)
        else:
            done = wait_drained(url, name, events)
    seconds = done - started
    return {
        "events": events,
        "replay_seconds": queued_at - started,
        "seconds": seconds,
        "events_per_s": events / seconds,
    }


def warehouse(directory: Path, events: int) -> dict[str, Any]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    config = toml("Warehouse", "postgres", dsn=PG_DSN, schema=schema)
    try:
        result = drain(directory, events, "Warehouse", config, None)
        with psycopg.connect(PG_DSN) as conn:
            rows = sum(
                conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]  # type: ignore[index]
                for (table,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                ).fetchall()
            )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    result["rows"] = rows
    result["rows_per_s"] = rows / result["seconds"]
    return result


def ingest(directory: Path, events: int, config: str | None) -> dict[str, Any]:
    database = directory / f"ingest-{uuid.uuid4().hex[:6]}.sqlite3"
    with collector(database, config) as url:
        result = asyncio.run(load.run(url, 8, events, 100))
    assert result["events"] == events, result
    return {"events": events, "seconds": result["seconds"], "events_per_s": result["throughput"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, sink() as sink_url:
        directory = Path(folder)
        hook = toml("Webhook", "webhook", url=f"{sink_url}/hook", batch_size=100)
        forward = toml("Segment", "tracking-api", host=sink_url, write_key="bench")
        results["webhook"] = drain(directory, args.events, "Webhook", hook, sink_url)
        results["tracking-api"] = drain(directory, args.events, "Segment", forward, sink_url)
        results["warehouse"] = warehouse(directory, args.events)
        files = toml("Files", "file", path=str(directory / "exports"))
        three = hook + forward + files
        none_runs, three_runs = [], []
        for _ in range(args.repeat):
            none_runs.append(ingest(directory, args.ingest_events, None))
            HTTP.request("POST", f"{sink_url}/_reset?latency=0&expect=0")
            three_runs.append(ingest(directory, args.ingest_events, three))
        results["ingest_none"] = none_runs
        results["ingest_three"] = three_runs
        ratios = [
            t["events_per_s"] / n["events_per_s"]
            for n, t in zip(none_runs, three_runs, strict=True)
        ]
        results["ingest_ratio"] = sorted(ratios)[len(ratios) // 2]
    return results


def markdown(results: dict[str, Any], machine: str) -> str:
    def median(runs: list[dict[str, Any]]) -> float:
        values = sorted(run["events_per_s"] for run in runs)
        return float(values[len(values) // 2])

    rows = [
        (
            "routing to a loopback webhook, `batch_size = 100`, events/s",
            results["webhook"]["events_per_s"],
            TARGETS["webhook"],
        ),
        (
            "tracking-api forward to a loopback Tracking API, events/s",
            results["tracking-api"]["events_per_s"],
            TARGETS["tracking-api"],
        ),
        (
            "postgres warehouse, rows/s (2 rows per track)",
            results["warehouse"]["rows_per_s"],
            TARGETS["warehouse"],
        ),
        ("ingest with no destination, events/s", median(results["ingest_none"]), None),
        (
            "ingest routing to 3 healthy destinations, events/s",
            median(results["ingest_three"]),
            None,
        ),
        (
            "ingest with 3 destinations ÷ with none",
            results["ingest_ratio"],
            TARGETS["ingest_ratio"],
        ),
    ]
    lines = [
        "# Destinations benchmarks",
        "",
        "Command: `python -m bench.destinations` (bench/destinations.py says what each figure "
        "measures).",
        "",
        machine,
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    for label, value, target in rows:
        shown = f"{value:.2f}" if value < 10 else f"{value:,.0f}"
        goal = "" if target is None else (f"≥ {target:.2f}" if target < 10 else f"≥ {target:,.0f}")
        met = "" if target is None else ("yes" if value >= target else "**no**")
        lines.append(f"| {label} | {shown} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per drain")
    parser.add_argument("--ingest-events", type=int, default=100_000, help="events per ingest")
    parser.add_argument("--repeat", type=int, default=3, help="ingest runs per configuration")
    parser.add_argument("--quick", action="store_true", help="5,000 events, one ingest run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.ingest_events, args.repeat = 5_000, 10_000, 1
    results = run(args)
    load1, load5, load15 = os.getloadavg()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    machine = (
        f"Code: commit {commit}. Machine: {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, {when}; load average {load1:.2f}, {load5:.2f}, "
        f"{load15:.2f} at the end (other work was running on the same machine)."
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "destinations.json").write_bytes(
        orjson.dumps({"machine": machine, **results}, option=orjson.OPT_INDENT_2)
    )
    text = markdown(results, machine)
    (RESULTS / "destinations.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
