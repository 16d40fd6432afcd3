"""Durable-mode cost: `track()` latency and end-to-end throughput, memory mode vs the spool.

Run: `python bench/spool_track.py [--calls 20000] [--threads 1,2,4,8] [--rate 4000]`. A sink
answering 200 runs in a separate process so that it does not compete with the client for the
GIL. Each row is one mode and thread count: per-call latency (median, p99, p99.9, max) across
all threads, calls per second while tracking, and the end-to-end rate (track everything, then
flush until the sink acknowledged all of it).

Flat out (the default), every thread calls in a tight loop: that measures capacity, and with
more threads than cores the latency is mostly waiting for the GIL and for the others' calls.
`--rate N` paces the threads to N calls per second in all, as a busy web app would call: that
is the latency an app sees.

Targets (issue 5): durable median under 40 us, p99 under 1 ms; end-to-end within 2x of memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import trackline

SINK = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"success":true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """A 200-answering HTTP server in its own process; yields its URL."""
    process = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def percentile(ordered: list[int], fraction: float) -> float:
    """A percentile of sorted nanoseconds, in microseconds."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000


def run(host: str, mode: str, threads: int, calls: int, rate: float) -> str:
    """Track `calls` messages from each of `threads` threads (at `rate` calls per second in
    all, or flat out when 0); returns one result row."""
    with tempfile.TemporaryDirectory() as directory:
        options: dict[str, object] = {"host": host, "flush_at": 500, "max_queue_size": 10**7}
        options["max_queue_bytes"] = 2**31
        if mode != "memory":
            options["spool"] = directory
            options["spool_synchronous"] = "full" if mode == "durable-full" else "normal"
        client = trackline.Client("bench", **options)  # type: ignore[arg-type]
        client.track("warm", "Up")
        client.flush(10)
        durations = [[0] * calls for _ in range(threads)]
        start_line = threading.Barrier(threads + 1)

        def produce(mine: list[int]) -> None:
            track = client.track
            clock = time.perf_counter_ns
            properties = {"revenue": 39.95, "shipping": "2-day", "pad": "p" * 200}
            gap = threads / rate if rate else 0.0
            start_line.wait()
            next_at = time.perf_counter()
            for index in range(calls):
                if gap:
                    next_at += gap
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                began = clock()
                track("user-1", "Item Purchased", properties)
                mine[index] = clock() - began

        workers = [threading.Thread(target=produce, args=(durations[i],)) for i in range(threads)]
        for worker in workers:
            worker.start()
        start_line.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        tracked = time.perf_counter() - began
        flushed = client.flush(120)
        total = time.perf_counter() - began
        stats = client.stats
        client.shutdown(5)
    ordered = sorted(value for mine in durations for value in mine)
    count = threads * calls
    lost = "" if flushed and stats.delivered == count + 1 else f"  (delivered {stats.delivered})"
    return (
        f"{mode:13} {threads:7d} {percentile(ordered, 0.5):9.1f} {percentile(ordered, 0.99):9.1f}"
        f" {percentile(ordered, 0.999):9.1f} {ordered[-1] / 1000:9.0f}"
        f" {count / tracked:11.0f} {count / total:11.0f}{lost}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per thread")
    parser.add_argument("--threads", default="1,2,4,8")
    parser.add_argument("--modes", default="memory,durable,durable-full")
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s in all; 0: flat out")
    args = parser.parse_args()
    pace = f"paced at {args.rate:g} calls/s in all" if args.rate else "flat out"
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.calls} calls/thread, {pace}"
    )
    print(
        f"{'mode':13} {'threads':>7} {'median us':>9} {'p99 us':>9} {'p99.9 us':>9}"
        f" {'max us':>9} {'track/s':>11} {'end2end/s':>11}"
    )
    with sink() as host:
        for mode in args.modes.split(","):
            for threads in (int(value) for value in args.threads.split(",")):
                calls = args.calls if mode != "durable-full" else max(1, args.calls // 10)
                print(run(host, mode, threads, calls, args.rate), flush=True)


if __name__ == "__main__":
    main()
