"""The collector on PostgreSQL against SQLite, and N processes against one, in the same run.

For each engine and each process count, a fresh database and a fresh `trackline collector`
(`--processes N`), then the load generator (`bench.load`: 8 keep-alive connections, batches
of 100 unique events, one request in flight per connection) in its own process. Recorded:
events/s stored (every 200 is a commit), the acknowledgement time of each request (p50, p99),
and the CPU seconds per 100k events of the collector processes, of the PostgreSQL backends
serving them, and of the load generator, with how busy the whole machine was: on a small
machine, that is what bounds the curve.

SQLite with several processes is not something `trackline collector` allows (it refuses with
one line); this bench runs it anyway, through the same supervisor, to show why.

Run: `python -m bench.collector_scale [--events 200000] [--reps 3] [--processes 1 2]`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("TRACKLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds of `pid`, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found += tree(int(child))
    return found


def busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def backends(database: str) -> list[int]:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [pid for (pid,) in rows]


@contextlib.contextmanager
def database(engine: str, directory: str) -> Iterator[tuple[str, str]]:
    """(what `--db` takes, the PostgreSQL database name or '') for a fresh database."""
    if engine == "sqlite":
        yield os.path.join(directory, f"scale-{uuid.uuid4().hex[:8]}.sqlite3"), ""
        return
    name = f"trackline_scale_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name, name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def collector(engine: str, db: str, processes: int) -> Iterator[tuple[str, int]]:
    """The collector serving `db` from `processes` processes; yields (URL, parent pid)."""
    if engine == "sqlite" and processes > 1:
        command = ["-m", "bench.collector_scale", "serve-sqlite", db, str(processes)]
    else:
        command = ["-m", "trackline", "collector", "--db", db, "--port", "0"]
        command += ["--processes", str(processes), "--log-level", "WARNING"]
    process = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split()[0]
        time.sleep(1.0 + 0.5 * processes)  # every process has opened its store
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


def measure(
    engine: str, processes: int, args: argparse.Namespace, directory: str
) -> dict[str, Any]:
    with database(engine, directory) as (db, name), collector(engine, db, processes) as (url, pid):
        pids = tree(pid)
        pg = backends(name) if name else []
        before_collector = sum(cpu_of(p) for p in pids)
        before_pg = sum(cpu_of(p) for p in pg)
        before_load = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_before, total_before = busy_ticks()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.load",
                "--url",
                url,
                "--events",
                str(args.events),
                "--connections",
                str(args.connections),
                "--batch",
                str(args.batch),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        busy_after, total_after = busy_ticks()
        after_load = resource.getrusage(resource.RUSAGE_CHILDREN)
        pg = backends(name) if name else []
        collector_cpu = sum(cpu_of(p) for p in tree(pid)) - before_collector
        pg_cpu = sum(cpu_of(p) for p in pg) - before_pg
    load = json.loads(done.stdout.strip().splitlines()[-1])
    per = 100_000 / max(1, load["events"])
    load_cpu = (after_load.ru_utime + after_load.ru_stime) - (
        before_load.ru_utime + before_load.ru_stime
    )
    return {
        "engine": engine,
        "processes": processes,
        "events_per_s": round(load["throughput"]),
        "refused": load["refused"],
        "no_answer": load.get("no_answer", 0),
        "ack_p50_ms": round(load["ack_p50_ms"], 1),
        "ack_p99_ms": round(load["ack_p99_ms"], 1),
        "collector_cpu_per_100k": round(collector_cpu * per, 2),
        "postgres_cpu_per_100k": round(pg_cpu * per, 2),
        "load_cpu_per_100k": round(load_cpu * per, 2),
        "machine_busy": round((busy_after - busy_before) / max(1, total_after - total_before), 2),
    }


def paired_ratios(results: list[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """Per engine and process count above one: the rate over one process's rate in the same
    repetition (run next to it, under the same conditions), one ratio per repetition."""
    one = {(r["engine"], r["rep"]): r["events_per_s"] for r in results if r["processes"] == 1}
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in results:
        base = one.get((r["engine"], r["rep"]))
        if r["processes"] > 1 and base:
            ratios.setdefault((r["engine"], r["processes"]), []).append(r["events_per_s"] / base)
    return ratios


def summary(results: list[dict[str, Any]]) -> str:
    """A markdown table of medians per engine and process count; a ratio to one process is
    the median of the ratios within each repetition, which are listed below the table."""
    keys = sorted(
        {(r["engine"], r["processes"]) for r in results}, key=lambda k: (k[0] != "postgres", k[1])
    )
    lines = [
        "| engine | processes | events/s stored | ack p50 ms | ack p99 ms "
        "| CPU s per 100k: collector | PostgreSQL | load generator | machine busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    paired = paired_ratios(results)
    for engine, processes in keys:
        runs = [r for r in results if (r["engine"], r["processes"]) == (engine, processes)]
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in runs[0]
            if isinstance(runs[0][k], (int, float))
        }
        ratios = paired.get((engine, processes))
        ratio = f" ({statistics.median(ratios):.2f}x)" if ratios else ""
        lines.append(
            f"| {engine} | {processes} | {med['events_per_s']:,.0f}{ratio} "
            f"| {med['ack_p50_ms']:.1f} | {med['ack_p99_ms']:.1f} "
            f"| {med['collector_cpu_per_100k']:.2f} | "
            f"{med['postgres_cpu_per_100k']:.2f} | {med['load_cpu_per_100k']:.2f} | "
            f"{med['machine_busy']:.0%} |"
        )
    lines.append("")
    for (engine, processes), ratios in paired.items():
        each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        lines.append(f"- {engine}, {processes} processes ÷ 1, repetition by repetition: {each}")
    return "\n".join(lines)


def serve_sqlite(db: str, processes: int) -> None:
    """Several processes on one SQLite file, which the command line refuses (see above)."""
    import logging
    import signal
    import socket

    from trackline.collector import server
    from trackline.collector.processes import Supervisor
    from trackline.collector.settings import CollectorSettings
    from trackline.collector.store import open_store

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = CollectorSettings(db)
    open_store(db).close()
    sock = server._listen("127.0.0.1", 0)
    print(f"trackline collector listening on {server._url(sock)}", flush=True)

    def serve_one(inbox: socket.socket) -> None:
        store = open_store(db)
        try:
            server._server(settings, store, (signal.SIGTERM,), inbox).run(sockets=[])
        finally:
            store.close()

    Supervisor(processes, serve_one, 30.0, sock).run()


def main() -> None:
    if sys.argv[1:2] == ["serve-sqlite"]:
        serve_sqlite(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--engines", nargs="*", default=["postgres", "sqlite"])
    parser.add_argument(
        "--save", action="store_true", help="write bench/results/collector_scale.{json,md}"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="trackline-scale-") as directory:
        for rep in range(args.reps):
            for engine in args.engines:
                for processes in args.processes:
                    result = {**measure(engine, processes, args, directory), "rep": rep}
                    results.append(result)
                    print(json.dumps(result), flush=True)
    table = summary(results)
    print(table, flush=True)
    if args.save:
        machine = (
            f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"load average {', '.join(f'{v:.2f}' for v in load_before)} at the start and "
            f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end"
        )
        results_dir = ROOT / "bench" / "results"
        (results_dir / "collector_scale.json").write_text(
            json.dumps({"machine": machine, "args": vars(args), "runs": results}, indent=1) + "\n"
        )
        (results_dir / "collector_scale.md").write_text(
            f"# Collector: PostgreSQL and SQLite, one and two processes\n\n"
            f"Command: `python -m bench.collector_scale --events {args.events} --reps "
            f"{args.reps} --save`. Machine: {machine}. Medians of {args.reps} runs (each "
            "repetition runs every engine and process count in turn); "
            f"{args.events:,} events per run, {args.connections} connections, batches of "
            f"{args.batch}.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
