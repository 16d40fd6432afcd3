"""The most one collector process could store on this machine: floors measured in one run.

Issue 17 asks one process (SQLite, 8 connections, batches of 100) for 100,000 events/s and
for at least 0.4 of what the raw counting sink absorbs from the same load. This measures,
in one run, what bounds both from below, so that the gap is a number of this machine and
not a guess:

- **sink**: `bench.sink` under `bench.load` (8 connections, batches of 100, random UUID
  ids): events/s, and the CPU each event costs the sink and the load generator.
- **collector**: `trackline collector` (a fresh SQLite file) under the same load: events/s
  and its CPU per event.
- **floors**, in this process, one thread, no HTTP, on the load's own request bodies:
  decoding the bodies (orjson); then also writing each message's text again (what the store
  keeps); then also inserting those rows into SQLite with the collector's settings (WAL,
  `synchronous=NORMAL`, 2 KB pages) in groups of 800 rows (what 8 connections' batches make);
  then also a plain index on a random 64-bit key per message, the one index exact dedupe
  cannot do without. No validation, no enrichment, no counts: less than any collector does.

A floor's ceiling is what one core could do at that cost per event. The load generator
shares the machine's cores, so at a target rate it leaves the collector
`cores - rate * generator's CPU per event` cores; the budget per event is that over the rate.

Run: `python -m bench.collector_floor [--events 200000] [--reps 2] [--save]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.collector_scale import cpu_of
from bench.load import build_requests
from bench.run import Server, collector_server, sink_server

ROOT = Path(__file__).resolve().parent.parent
#: Issue 17's rate for one process, batches of 100.
TARGET_RATE = 100_000
#: Issue 17's share of the raw sink's rate.
TARGET_SINK_SHARE = 0.4
#: Rows per transaction in the storage floors: 8 connections' batches of 100.
GROUP_ROWS = 800
FLOORS = ("decode", "decode, encode", "decode, encode, insert", "decode, encode, insert, key index")


def under_load(server: Server, events: int) -> dict[str, float]:
    """`bench.load` against `server`: events/s and CPU µs per event of server and generator."""
    before = cpu_of(server.pid)
    command = ["-m", "bench.load", "--url", server.url, "--events", str(events), "--ids", "uuid"]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    server_cpu = cpu_of(server.pid) - before
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["events"] != events:
        raise RuntimeError(f"{server.url} answered 200 for {result['events']} of {events}")
    return {
        "events_per_s": result["throughput"],
        "server_us": server_cpu / events * 1e6,
        "generator_us": result["cpu_seconds"] / events * 1e6,
    }


def floor(stage: str, bodies: Sequence[bytes], path: str) -> float:
    """CPU µs per event of `stage` (one of FLOORS) over `bodies`, in this thread."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size = 2048")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, message_key INTEGER, body BLOB)")
    if stage.endswith("key index"):
        db.execute("CREATE INDEX events_message_key ON events (message_key)")
    encode, insert = "encode" in stage, "insert" in stage
    rows: list[tuple[int, bytes]] = []
    events = 0
    started = time.process_time()
    for body in bodies:
        batch = orjson.loads(body)["batch"]
        events += len(batch)
        if not encode:
            continue
        rows += [(_key(message["messageId"]), orjson.dumps(message)) for message in batch]
        if len(rows) >= GROUP_ROWS:
            if insert:
                _commit(db, rows)
            rows = []
    if insert and rows:
        _commit(db, rows)
    took = time.process_time() - started
    db.close()
    return took / events * 1e6


def _key(message_id: str) -> int:
    # Python's string hash is random per process and costs less than the store's keyed
    # BLAKE2b: a floor, not the store's key.
    return hash(message_id) & 0x7FFF_FFFF_FFFF_FFFF


def _commit(db: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> None:
    db.execute("BEGIN")
    db.executemany("INSERT INTO events (message_key, body) VALUES (?, ?)", rows)
    db.execute("COMMIT")


def measure(events: int, directory: str) -> dict[str, float]:
    """One repetition: the sink, the collector, then every floor."""
    result: dict[str, float] = {}
    with sink_server() as sink:
        for name, value in under_load(sink, events).items():
            result[f"sink {name}"] = value
    with collector_server(directory) as collector:
        for name, value in under_load(collector, events).items():
            result[f"collector {name}"] = value
    bodies = [raw.split(b"\r\n\r\n", 1)[1] for raw, _ in build_requests("x", events, 100, True)]
    for number, stage in enumerate(FLOORS):
        path = os.path.join(directory, f"floor-{time.monotonic_ns()}-{number}.sqlite3")
        result[f"floor {stage}"] = floor(stage, bodies, path)
    return result


def render(runs: Sequence[dict[str, float]]) -> str:
    """The table of medians and what they imply for the targets."""

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def row(name: str, rate: str, cpu: float) -> str:
        return f"| {name} | {rate} | {cpu:.1f} | {1e6 / cpu:,.0f} |"

    cores = os.cpu_count() or 1
    generator = median("collector generator_us")
    budget_cores = cores - TARGET_RATE * generator / 1e6
    budget = budget_cores / TARGET_RATE * 1e6
    sink_rate = median("sink events_per_s")
    collector_rate = median("collector events_per_s")
    shares = [run["collector events_per_s"] / run["sink events_per_s"] for run in runs]
    lines = [
        "| what | events/s | CPU µs per event | one core at that cost, events/s |",
        "|---|---|---|---|",
        row("`bench.sink` (raw counting sink)", f"{sink_rate:,.0f}", median("sink server_us")),
        row("load generator, against the sink", "", median("sink generator_us")),
        row("`trackline collector`", f"{collector_rate:,.0f}", median("collector server_us")),
        row("load generator, against the collector", "", generator),
    ]
    lines += [row(f"floor: {stage}", "", median(f"floor {stage}")) for stage in FLOORS]
    key_floor = median(f"floor {FLOORS[-1]}")
    lines += [
        "",
        f"- Collector ÷ sink, repetition by repetition: "
        f"{', '.join(f'{share:.3f}' for share in shares)} (target {TARGET_SINK_SHARE}); "
        f"{TARGET_SINK_SHARE} of the sink is {TARGET_SINK_SHARE * sink_rate:,.0f} events/s, "
        f"{TARGET_SINK_SHARE * sink_rate / (1e6 / key_floor):.1f} times what one core does "
        "at the last floor's cost.",
        f"- At {TARGET_RATE:,} events/s the load generator takes "
        f"{TARGET_RATE * generator / 1e6:.2f} of the {cores} cores, leaving the collector "
        f"{budget:.1f} µs of CPU per event, all its threads together; the last floor alone "
        f"costs {key_floor:.1f} µs, the collector {median('collector server_us'):.1f} µs.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--save", action="store_true", help="write bench/results/floor.{md,json}")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="trackline-floor-") as directory:
        for rep in range(args.reps):
            runs.append(measure(args.events, directory))
            print(json.dumps({"rep": rep, **runs[-1]}), flush=True)
    table = render(runs)
    print(table, flush=True)
    if args.save:
        _save(args, runs, table, load_before)


def _save(
    args: argparse.Namespace,
    runs: list[dict[str, float]],
    table: str,
    load_before: tuple[float, float, float],
) -> None:
    def load(values: Sequence[float]) -> str:
        return ", ".join(f"{value:.2f}" for value in values)

    machine = (
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load "
        f"average {load(load_before)} at the start and {load(os.getloadavg())} at the end"
    )
    results: dict[str, Any] = {"machine": machine, "args": vars(args), "runs": runs}
    directory = ROOT / "bench" / "results"
    (directory / "floor.json").write_text(json.dumps(results, indent=1) + "\n")
    (directory / "floor.md").write_text(
        "# Collector: one process against the floors of this machine\n\n"
        f"Command: `python -m bench.collector_floor --events {args.events} --reps {args.reps} "
        f"--save`. Machine: {machine}. Medians of {args.reps} repetitions; {args.events:,} "
        "events per load run, 8 connections, batches of 100, random UUID ids.\n\n"
        f"{table}\n"
    )


if __name__ == "__main__":
    main()
