"""One measured run of one library, in a fresh process; prints its results as one JSON line.

`deliver` mode: warm up (import paths, threads, the connection), then time every `track()`
call of `--events` calls with 5 small properties, flush, and wait until the receiving end has
counted them all. It reports the call cost (median, p99), events per second from the first
call until the last event was counted, and the whole process's CPU seconds over that span.

`memory` mode: point the client at a port that refuses connections, queue a warm-up, take the
RSS, queue `--events` more, take the RSS again: the growth per accepted event is what a queued
event costs while the API is down.

`outage` mode: the same with every library's default settings, `--target down` (connections
refused) or `hole` (accepted, never answered), and more events than a default queue holds: each
library holds what its queue and its batches in flight take, drops the rest, and the RSS growth
per event held (accepted, since nothing can be delivered) is what an outage costs. Workers
that took batches keep them in flight, retrying: this is where a batch held twice (its messages
and its body) shows.

The receiving end is the counting sink (`bench.sink`, control URL `--sink`) or the collector
(`--collector`, its `/api/stats`). The library `baseline` calls a function that does nothing:
it shows what the harness itself costs per call and per 100k events.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import socket
import sys
import threading
import time
import urllib.request
from typing import Any, Final

import psutil
import urllib3

from bench import peers

_USERS: Final = [f"user-{n:04d}" for n in range(1000)]
_SKUS: Final = [f"sku-{n:03d}" for n in range(100)]
WARMUP: Final = 300


def run_calls(peer: peers.Peer, count: int, offset: int, times: list[int] | None) -> int:
    """Call `track` `count` times, each with a fresh 5-property dict.

    With `times`, stores each call's duration (ns) in it and returns `count`: the receiving end
    counts what arrived, so the loop spends nothing on return values. Without, returns how many
    calls the library accepted.
    """
    track = peer.track
    accepted = peer.accepted
    event = peers.EVENT
    clock = time.perf_counter_ns
    users = _USERS
    skus = _SKUS
    ok = 0
    for index in range(count):
        n = offset + index
        properties = {
            "plan": "pro",
            "revenue": 39.95,
            "currency": "EUR",
            "sku": skus[n % 100],
            "quantity": n % 5 + 1,
        }
        user = users[n % 1000]
        if times is None:
            ok += accepted(track(user, event, properties))
            continue
        start = clock()
        track(user, event, properties)
        times[index] = clock() - start
    return ok if times is None else count


def _get(url: str, timeout: float = 30.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


class Sink:
    """The counting sink's control API."""

    def __init__(self, url: str, latency: float) -> None:
        self._url = url
        self._latency = latency

    def expect(self, count: int) -> None:
        """Zero the counters and set how many events `wait` waits for."""
        request = urllib.request.Request(
            f"{self._url}/_reset?latency={self._latency}&expect={count}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def wait(self, timeout: float) -> tuple[int, float]:
        """Events counted and the monotonic time of the last one, once all came or timed out."""
        state = _get(f"{self._url}/_wait?timeout={timeout}", timeout + 30)
        return int(state["events"]), float(state["last_at"])


class Collector:
    """A running collector, watched through `/api/stats` (each answer follows a commit)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._base = 0
        self._expect = 0

    def _events(self) -> int:
        return int(_get(f"{self._url}/api/stats")["events"])

    def expect(self, count: int) -> None:
        self._base = self._events()
        self._expect = count

    def wait(self, timeout: float) -> tuple[int, float]:
        deadline = time.monotonic() + timeout
        while True:
            stored = self._events() - self._base
            now = time.monotonic()
            if stored >= self._expect or now > deadline:
                return stored, now
            time.sleep(0.01)


class Nowhere:
    """The baseline's receiving end: everything counts as arrived at once."""

    def __init__(self) -> None:
        self._expect = 0

    def expect(self, count: int) -> None:
        self._expect = count

    def wait(self, timeout: float) -> tuple[int, float]:
        return self._expect, time.monotonic()


def deliver(args: argparse.Namespace) -> dict[str, Any]:
    """Track, flush, wait until every event arrived; call cost, throughput, CPU."""
    target: Sink | Collector | Nowhere
    if args.lib == "baseline":
        target = Nowhere()
    elif args.sink:
        target = Sink(args.sink, args.latency)
    else:
        target = Collector(args.collector)
    peer = _make(args.lib, args.host, args.queue_size)
    target.expect(WARMUP)
    run_calls(peer, WARMUP, 0, None)
    peer.flush()
    target.wait(args.timeout)

    events = args.events
    times = [0] * events
    target.expect(events)
    gc.collect()
    cpu_start = time.process_time()
    start = time.monotonic()
    accepted = run_calls(peer, events, WARMUP, times)
    calls_done = time.monotonic()
    peer.flush()
    counted, last_at = target.wait(args.timeout)
    cpu = time.process_time() - cpu_start
    times.sort()
    elapsed = max(last_at - start, 1e-9)
    return {
        "accepted": accepted,
        "counted": counted,
        "complete": counted >= events,
        "call_median_us": times[len(times) // 2] / 1000,
        "call_p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] / 1000,
        "calls_seconds": calls_done - start,
        "seconds": elapsed,
        "throughput": counted / elapsed,
        "cpu_seconds": cpu,
        "cpu_per_100k": cpu * 100_000 / max(counted, 1),
    }


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth per event queued while every connection is refused."""
    # A bound socket that never listens: connecting to its port is refused at once.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    # Room for the warm-up and every measured event, in every library alike.
    peer = _make(args.lib, f"http://127.0.0.1:{port}", WARMUP + args.events)
    process = psutil.Process()
    run_calls(peer, WARMUP, 0, None)
    time.sleep(args.settle)
    gc.collect()
    before = process.memory_info().rss
    accepted = run_calls(peer, args.events, WARMUP, None)
    time.sleep(args.settle)
    gc.collect()
    after = process.memory_info().rss
    return {
        "accepted": accepted,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_event": (after - before) / max(accepted, 1),
    }


def _outage_target(kind: str) -> tuple[socket.socket, str]:
    """A port that refuses connections (`down`) or accepts them and never answers (`hole`)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    if kind == "hole":
        server.listen(64)
        held: list[socket.socket] = []

        def accept() -> None:
            while True:
                held.append(server.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def outage(args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth per event held during an outage, default settings."""
    server, url = _outage_target(args.target)
    # Code every library runs on its first connection (urllib3, idna) is loaded before the
    # first measure, so that it is not counted as what events cost.
    with contextlib.suppress(Exception):
        urllib3.PoolManager(retries=False, timeout=0.2).request("POST", url, body=b"{}")
    peer = peers.make(args.lib, url, None)
    process = psutil.Process()
    gc.collect()
    time.sleep(args.settle / 2)
    before = process.memory_info().rss
    accepted = run_calls(peer, args.events, 0, None)
    time.sleep(args.settle)
    gc.collect()
    after = process.memory_info().rss
    server.close()
    return {
        "accepted": accepted,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_held": (after - before) / max(accepted, 1),
    }


def _make(lib: str, host: str, queue_size: int | None) -> peers.Peer:
    if lib == "baseline":
        return peers.Peer(
            name="baseline", track=lambda *args: args, flush=lambda: None, accepted=bool
        )
    return peers.make(lib, host, queue_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("deliver", "memory", "outage"))
    parser.add_argument("--lib", required=True, choices=(*peers.LIBRARIES, "baseline"))
    parser.add_argument("--host", default="", help="where the client sends (an origin)")
    parser.add_argument("--sink", default="", help="the counting sink's URL (deliver mode)")
    parser.add_argument("--collector", default="", help="a collector's URL (deliver mode)")
    parser.add_argument("--latency", type=float, default=0.0, help="sink latency, seconds")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queue-size", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=1.0, help="memory mode pause, seconds")
    parser.add_argument("--target", choices=("down", "hole"), default="down", help="outage mode")
    args = parser.parse_args(argv)
    if args.mode == "deliver" and args.lib != "baseline" and not (args.sink or args.collector):
        parser.error("deliver mode needs --sink or --collector")
    modes = {"deliver": deliver, "memory": memory, "outage": outage}
    result = modes[args.mode](args)
    result.update(lib=args.lib, mode=args.mode, events=args.events)
    if args.lib != "baseline":
        result["version"] = peers.version(args.lib)
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # Skip the libraries' exit hooks: some wait on retries against the refused port.
    os._exit(0)


if __name__ == "__main__":
    main()
