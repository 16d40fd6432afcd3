"""How fast `trackline import` goes: a generated JSON Lines file, imported by the command.

Four runs of the same file, each in a fresh `trackline import` process, timed from start to
exit (so reading, validating, sending and the final flush all count): `--dry-run` (no
network), into the counting sink answering at once, into the sink answering after 50 ms (a
distant API, where `--workers` matters), and into the local collector in its own process.

Run: `python -m bench.import_file [--events 100000]`; prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence

from bench.run import collector, sink


def write_file(path: pathlib.Path, events: int) -> None:
    """`events` track messages with five properties, historical timestamps and messageIds."""
    with path.open("w", encoding="utf-8") as out:
        for n in range(events):
            message = {
                "type": "track",
                "userId": f"user-{n % 1000}",
                "event": "Imported",
                "properties": {"n": n, "plan": "pro", "revenue": n / 7, "ok": True, "tag": "b"},
                "timestamp": "2020-01-01T00:00:00.000Z",
                "messageId": f"bench-{n}",
            }
            out.write(json.dumps(message) + "\n")


def timed_import(path: pathlib.Path, *options: str) -> tuple[float, str]:
    """Seconds `trackline import` took, and its summary line."""
    command = [sys.executable, "-m", "trackline", "import", str(path), "--no-progress"]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "--write-key", "bench", *options],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.monotonic() - started, result.stdout.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "bench.jsonl"
        write_file(path, args.events)
        runs: list[tuple[str, Sequence[str]]] = [("dry run", ["--dry-run"])]
        with sink() as url:
            runs_here = [
                ("sink, at once", ["--host", url]),
                ("sink, 50 ms, 2 workers", ["--host", url]),
                ("sink, 50 ms, 8 workers", ["--host", url, "--workers", "8"]),
            ]
            for name, options in [*runs, *runs_here]:
                latency = 0.05 if "50 ms" in name else 0.0
                reset = f"{url}/_reset?latency={latency}&expect=0"
                urllib.request.urlopen(urllib.request.Request(reset, method="POST")).close()
                report(name, args.events, *timed_import(path, *options))
        with collector(directory) as url:
            report("local collector", args.events, *timed_import(path, "--host", url))


def report(name: str, events: int, seconds: float, summary: str) -> None:
    print(f"{name:<24} {events / seconds:>10,.0f} events/s  {seconds:6.2f} s   {summary}")


if __name__ == "__main__":
    main()
