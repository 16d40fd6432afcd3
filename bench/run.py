"""Run every benchmark scenario, each library in a fresh process, and write the markdown table.

Run from the repository root, after `pip install -e '.[bench]'` (this installs nothing):

    python -m bench.run                      # the full run behind the README table
    python -m bench.run --quick              # a smoke run: fewer events, one repetition

Scenarios, all against the same counting sink on 127.0.0.1 (`bench.sink`, its own process):
`near` times 100k `track()` calls with 5 small properties and measures events/s until the
sink counted them all and the process's CPU seconds, with the sink answering at once; `far`
does the same with 50 ms added to every answer; `memory` measures RSS per event queued while
connections are refused; `outage` measures RSS per event held with default settings while the
API refuses connections (`down`) or never answers (`hole`). Then the collector: a load
generator (`bench.load`) posting batches over several connections to `trackline collector`, and
the client sending to it end to end.
Each repetition runs every library back to back, in a rotating order, and the table shows
medians and the median of the ratios within each repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from bench import peers, table

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results"
COLLECTOR_TARGET: Final = 50_000.0
CHILD_TIMEOUT: Final = 900.0
SCENARIOS: Final = ("near", "far", "memory", "outage", "collector")
#: Events tracked in an outage: twice what a default queue holds (10,000 in every library).
OUTAGE_EVENTS: Final = 20_000


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclasses.dataclass(frozen=True)
class Server:
    """A server the benchmarks started in its own process."""

    url: str
    pid: int


@contextlib.contextmanager
def sink_server() -> Iterator[Server]:
    """The counting sink in its own process."""
    process = subprocess.Popen(
        _python("-m", "bench.sink"), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """The counting sink in its own process; yields its URL."""
    with sink_server() as server:
        yield server.url


@contextlib.contextmanager
def collector_server(directory: str) -> Iterator[Server]:
    """`trackline collector` on a fresh database in its own process."""
    database = os.path.join(directory, f"bench-{time.monotonic_ns()}.sqlite3")
    command = ["-m", "trackline", "collector", "--db", database, "--port", "0"]
    process = subprocess.Popen(
        _python(*command, "--log-level", "WARNING"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield Server(line.split(" on ", 1)[1].split()[0], process.pid)
    finally:
        process.terminate()
        process.wait(60)


@contextlib.contextmanager
def collector(directory: str) -> Iterator[str]:
    """`trackline collector` on a fresh database in its own process; yields its URL."""
    with collector_server(directory) as server:
        yield server.url


def _child(args: Sequence[str], log: Path) -> dict[str, Any] | None:
    """Run one child process; its JSON result, or None (the reason goes to the log)."""
    with log.open("a") as errors:
        errors.write(f"\n$ {shlex.join(args)}\n")
        errors.flush()
        try:
            done = subprocess.run(
                args,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            errors.write("timed out\n")
            return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        with log.open("a") as errors:
            errors.write(f"exit {done.returncode}: {done.stdout[-2000:]}\n")
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _record(runs: table.Runs, key: tuple[str, str], result: dict[str, Any] | None) -> None:
    runs.setdefault(key, [])
    if result is not None:
        runs[key].append(result)
        shown = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        print(f"  {key[0]:9s} {key[1]:16s} {json.dumps(shown)}", flush=True)
    else:
        print(f"  {key[0]:9s} {key[1]:16s} FAILED (see the log)", flush=True)


def _rotated(libraries: Sequence[str], rep: int) -> list[str]:
    shift = rep % len(libraries)
    return [*libraries[shift:], *libraries[:shift]]


def client_scenarios(args: argparse.Namespace, runs: table.Runs, log: Path) -> None:
    """near, far and memory for every library, repeated."""
    with sink() as url:
        reps = max(args.reps, args.far_reps)
        for rep in range(reps):
            print(f"repetition {rep + 1}/{reps}", flush=True)
            for lib in _rotated(args.libs, rep):
                common = ["--lib", lib, "--host", url, "--sink", url]
                deliver = _python("-m", "bench.child", "deliver", *common)
                deliver += ["--events", str(args.events), "--queue-size", str(args.events)]
                if "near" in args.scenarios and rep < args.reps:
                    _record(runs, ("near", lib), _child(deliver, log))
                if "far" in args.scenarios and rep < args.far_reps:
                    far = [*deliver, "--latency", str(args.latency)]
                    _record(runs, ("far", lib), _child(far, log))
                if "memory" in args.scenarios and rep < args.reps:
                    memory = _python("-m", "bench.child", "memory", "--lib", lib)
                    memory += ["--events", str(args.memory_events)]
                    _record(runs, ("memory", lib), _child(memory, log))
                for target in ("down", "hole"):
                    if "outage" in args.scenarios and rep < args.reps:
                        outage = _python("-m", "bench.child", "outage", "--lib", lib)
                        outage += ["--target", target, "--events", str(OUTAGE_EVENTS)]
                        _record(runs, (f"outage-{target}", lib), _child(outage, log))
            if "near" in args.scenarios and rep < args.reps:
                baseline = _python("-m", "bench.child", "deliver", "--lib", "baseline")
                _record(
                    runs,
                    ("near", "baseline"),
                    _child([*baseline, "--events", str(args.events)], log),
                )


def collector_scenarios(args: argparse.Namespace, runs: table.Runs, log: Path) -> None:
    """The load generator against a fresh collector, then clients end to end, repeated."""
    clients = [lib for lib in args.libs if lib != "posthog"]  # posthog speaks its own API
    with tempfile.TemporaryDirectory(prefix="trackline-bench-") as directory:
        for rep in range(args.collector_reps):
            print(f"collector repetition {rep + 1}/{args.collector_reps}", flush=True)
            with collector(directory) as url:
                load = _python("-m", "bench.load", "--url", url, "--events", str(args.events))
                load += ["--connections", str(args.connections), "--batch", str(args.batch)]
                _record(runs, ("collector", "load"), _child(load, log))
            for lib in _rotated(clients, rep):
                with collector(directory) as url:
                    command = _python("-m", "bench.child", "deliver", "--lib", lib)
                    command += ["--host", url, "--collector", url, "--events", str(args.events)]
                    command += ["--queue-size", str(args.events)]
                    _record(runs, ("collector", lib), _child(command, log))
            for leftover in Path(directory).iterdir():
                leftover.unlink()


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "commit": _commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": model,
        "load": os.getloadavg(),
    }


def _commit() -> str:
    """The measured code's commit, marked when src/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head} with local changes" if dirty else head or "unknown"


def render(
    args: argparse.Namespace, runs: table.Runs, before: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """The results file (command, machine, tables, notes), and what goes between the bench
    markers of each page that shows the latest run: the README's headline table, and the
    Performance page's full one."""
    after = machine()
    versions = {lib: peers.version(lib) for lib in args.libs}
    command = "python -m bench.run " + shlex.join(args.argv)
    load = ", ".join(f"{a:.2f}" for a in before["load"])
    load_after = ", ".join(f"{a:.2f}" for a in after["load"])
    floor = runs.get(("near", "baseline"), [])
    client = table.client_table(runs, args.libs, versions)
    tuned = f"¹ trackline with `{_options(peers.TUNED_OPTIONS)}`: one request in flight at a "
    tuned += "time, like the peers. Not counted against the targets."
    summary = [client, "", tuned]
    headline = [table.headline_table(runs, args.libs, versions)]
    parts = [
        "# trackline benchmarks",
        "",
        f"Command: `{command.strip()}` (from the repository root, after "
        "`pip install -e '.[bench]'`).",
        "",
        f"Code: commit {before['commit']}. "
        f"Machine: {before['cpus']} CPUs ({before['cpu']}), Python {before['python']}, "
        f"{before['date']}; load average {load} at the start and {load_after} at the end "
        "(other work was running on the same machine).",
        "",
        f"{args.events:,} `track()` calls per run, each with a fresh dict of 5 small "
        f"properties; medians of {args.reps} repetitions ({args.far_reps} for the 50 ms sink); "
        "each library in a fresh process, against the same counting sink on 127.0.0.1 in its "
        "own process. Ratios are trackline's value over the peer's, taken within each "
        "repetition, median shown.",
        "",
        client,
        "",
        "Every library runs with its own defaults (trackline: up to 4 workers, started as a "
        "backlog builds, batches of up to 2,500 messages or 500 KB, gzip on; the peers: one "
        "thread, batches of 100, no gzip), "
        f"except the queue, sized to hold the {args.events:,} events of a run for every "
        "library, since none of the peers can make a caller wait for room and would drop what "
        "outruns its delivery. Throughput counts from the first call until the sink has "
        "answered the last event (each library's flush is called after the last event); CPU "
        "is the whole process over the same span. The outage rows keep every default, the "
        f"queue too: {OUTAGE_EVENTS:,} events are tracked while the API is down (connections "
        "refused) or a black hole (connections accepted, never answered), and the RSS growth "
        "is divided by the events each library accepted and holds (queued, or in batches "
        "its workers keep retrying).",
        "",
        tuned,
    ]
    if floor:
        parts += [
            "",
            "Harness floor (the same loop calling a function that does nothing): "
            f"{table._number(table.median(floor, 'call_median_us'), 2)} µs per call, "
            f"{table._number(table.median(floor, 'cpu_per_100k'), 3)} CPU s per 100k events; "
            "it is included in every library's numbers above.",
        ]
    if "collector" in args.scenarios:
        rows = [
            (
                "load",
                f"load generator: {args.connections} connections, batches of {args.batch}",
            ),
            *[
                (lib, f"{table._heading(lib, versions)} client, end to end")
                for lib in args.libs
                if lib != "posthog"
            ],
        ]
        parts += [
            "",
            "## Collector",
            "",
            f"`trackline collector` (SQLite, default options) in its own process, a fresh "
            f"database per run, {args.events:,} events per run, median of "
            f"{args.collector_reps} runs. End to end: from the first `track()` call until "
            "`/api/stats` shows every event stored.",
            "",
            table.collector_table(runs, rows, COLLECTOR_TARGET),
        ]
        summary += ["", table.collector_table(runs, rows, COLLECTOR_TARGET)]
        headline += ["", table.collector_table(runs, rows[:1], COLLECTOR_TARGET)]
    parts += ["", "## Every repetition", "", table.spread(runs, _describe), ""]
    measured = f"Measured by `{command.strip()}` at commit {before['commit']}, {before['date']}."
    summary += ["", measured]
    headline += [
        "",
        f"{measured} Every library with its own defaults; the peers' full figures, the "
        "`workers=1` column, the p99 and the method: [Performance](docs/performance.md).",
    ]
    return "\n".join(parts), {
        "README.md": "\n".join(headline),
        PERFORMANCE_PAGE: "\n".join(summary),
    }


README_START: Final = "<!-- bench: the latest table, written by python -m bench.run --readme -->"
README_END: Final = "<!-- bench: end of the table -->"


#: The documentation's page with the full latest table (the README has the headline one).
PERFORMANCE_PAGE: Final = "docs/performance.md"


def update_readme(summaries: dict[str, str]) -> None:
    """Put each page's summary (page path from the root -> text) between its two bench
    markers; a page without them is left alone."""
    for name, summary in summaries.items():
        page = ROOT / name
        text = page.read_text(encoding="utf-8")
        if README_START not in text:
            continue
        start = text.index(README_START) + len(README_START)
        end = text.index(README_END)
        page.write_text(f"{text[:start]}\n{summary}\n{text[end:]}", encoding="utf-8")


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def _describe(scenario: str, lib: str) -> str:
    what = {
        "near": "events/s, sink at once",
        "far": "events/s, sink 50 ms",
        "memory": "bytes per queued event",
        "outage-down": "bytes per event held, sink down",
        "outage-hole": "bytes per event held, black hole",
        "collector": "events/s stored",
    }[scenario]
    return f"{lib}, {what}"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libs", default=",".join(peers.LIBRARIES), help="comma separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma separated")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--memory-events", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--far-reps", type=int, default=3)
    parser.add_argument("--collector-reps", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="far sink, seconds")
    parser.add_argument("--connections", type=int, default=8, help="collector load")
    parser.add_argument("--batch", type=int, default=100, help="collector load batch size")
    parser.add_argument("--quick", action="store_true", help="20k events, one repetition")
    parser.add_argument("--out", default=str(RESULTS / "latest.md"))
    parser.add_argument(
        "--readme",
        action="store_true",
        help="also update the tables in README.md (headline) and docs/performance.md (full)",
    )
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.quick:
        args.events, args.reps, args.far_reps, args.collector_reps = 20_000, 1, 1, 1
    args.libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for lib in args.libs:
        if lib not in peers.LIBRARIES:
            parser.error(f"unknown library {lib!r}; known: {', '.join(peers.LIBRARIES)}")
        try:
            peers.version(lib)
        except Exception:
            parser.error(f"{peers.DISTRIBUTIONS[lib]} is not installed: pip install -e '.[bench]'")
    if "trackline" not in args.libs:
        parser.error("trackline must be among --libs: every ratio is taken against it")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    before = machine()
    runs: table.Runs = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.gettempdir()) / "trackline-bench.log"
    log.write_text("")
    print(f"children's errors go to {log}", flush=True)
    if {"near", "far", "memory", "outage"} & set(args.scenarios):
        client_scenarios(args, runs, log)
    if "collector" in args.scenarios:
        collector_scenarios(args, runs, log)
    report, summaries = render(args, runs, before)
    out.write_text(report)
    if args.readme:
        update_readme(summaries)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": before, "runs": {f"{s}/{lib}": r for (s, lib), r in runs.items()}})
    )
    print(report)


if __name__ == "__main__":
    main()
