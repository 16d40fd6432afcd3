"""The client fault matrix (table B1), process side: a producer outrunning the link, exit and
SIGTERM during an outage, and fork with a batch in flight; each settled by a ledger."""

from __future__ import annotations

import array
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import trackline
from tests.support.faultproxy import Bandwidth, BlackHole, Direction, FaultProxy, Latency
from tests.support.ledger import CollectorStore, Ledger
from trackline.encoding import encode_message
from trackline.wire import MAX_BATCH_BYTES

MakeClient = Callable[..., trackline.Client]


def _flood(client: trackline.Client, ids: list[str], threads: int) -> array.array[float]:
    """`threads` threads call track() flat out, one call per id; returns each call's duration.

    The durations array is preallocated so that the loop keeps nothing alive of its own.
    """
    durations = array.array("d", bytes(8 * len(ids)))
    share = len(ids) // threads
    properties = {"pad": "p" * 300}

    def produce(first: int) -> None:
        clock = time.perf_counter
        for index in range(first, first + share):
            started = clock()
            client.track("user", "Flood", properties, message_id=ids[index])
            durations[index] = clock() - started

    workers = [threading.Thread(target=produce, args=(n * share,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return durations


def test_c13_producers_outrunning_a_slow_link_never_wait_on_it(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Eight threads call track() flat out while the uplink carries 64 KB/s (a full batch takes
    seconds to send): no call waits on the network, and the overflow is dropped as queue_full,
    reported to on_error message by message and counted."""
    proxy.add(Bandwidth(bytes_per_second=64_000, direction=Direction.UPSTREAM))
    client = ledger_client(
        proxy.url, max_queue_bytes=512 * 1024, max_queue_size=1_000_000, gzip=False
    )
    ids = ledger.reserve(40_000)
    durations = sorted(_flood(client, ids, threads=8))
    proxy.clear()
    assert client.flush(10)
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.dropped["queue_full"] > len(ids) // 2
    # Eight threads share one GIL: a call may wait a few switch intervals (5 ms) for the
    # interpreter, never for a request, which takes seconds on this link. How fast calls are is
    # the benchmarks' business (bench/); this asserts only that none waited on the network.
    slowest = durations[-1]
    assert slowest < 1.0, f"slowest {slowest * 1e3:.1f} ms"


def test_c13_memory_held_stays_within_the_queue_bound(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Offering 45 times max_queue_bytes through a 64 KB/s link, the memory allocated by
    trackline (traced by tracemalloc, sampled while the producer runs) never exceeds the queue
    bound plus the batch being sent plus 1 MiB."""
    proxy.add(Bandwidth(bytes_per_second=64_000, direction=Direction.UPSTREAM))
    bound = 256 * 1024
    client = ledger_client(proxy.url, max_queue_bytes=bound, max_queue_size=1_000_000, gzip=False)
    ids = ledger.reserve(30_000)
    held: list[int] = []
    producing = threading.Event()

    def sample() -> None:
        trackline_only = [tracemalloc.Filter(True, "*/trackline/*")]
        while producing.is_set():
            snapshot = tracemalloc.take_snapshot().filter_traces(trackline_only)
            held.append(sum(stat.size for stat in snapshot.statistics("filename")))
            time.sleep(0.05)

    tracemalloc.start()
    producing.set()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _flood(client, ids, threads=1)
    finally:
        producing.clear()
        sampler.join()
        tracemalloc.stop()
    proxy.clear()
    assert client.flush(10)
    ledger.settle(client, store).assert_exact()
    offered = client.stats.enqueued * 400  # each message is over 400 bytes encoded
    assert len(held) >= 3
    # The queue, the messages of the batch on the wire, its request body, and 256 KiB.
    assert max(held) < bound + 2 * MAX_BATCH_BYTES + 256 * 1024, held
    assert offered > 10 * max(held)


def test_a_queued_message_costs_its_length_in_memory() -> None:
    """An encoded message owns a buffer of its own length: orjson's output buffer (at least
    4 KB) would make a 300-byte message cost thirteen times what max_queue_bytes counts."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_message({"type": "track", "pad": "p" * 300, "i": i}) for i in range(1000)]
        per_message = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_message < len(kept[0]) + 100, per_message


def _exit_script(url: str, fault: str) -> str:
    """A program that tracks 500 events while the server is unreachable and then ends; at the
    very end (after trackline's own exit hook) it prints its accounting as one JSON line."""
    return textwrap.dedent(
        f"""
        import atexit, json, signal, sys, time
        state = {{"drops": {{}}}}

        def report():
            state["exit_seconds"] = time.monotonic() - state["ended"]
            stats = client.stats
            state["stats"] = {{
                "enqueued": stats.enqueued, "delivered": stats.delivered,
                "dropped": dict(stats.dropped), "queued": stats.queued,
                "in_flight": stats.in_flight, "retries": stats.retries,
                "batches": stats.batches, "bytes_sent": stats.bytes_sent,
            }}
            print(json.dumps(state), flush=True)

        # Registered before trackline is imported, so it runs after trackline's exit hook.
        atexit.register(report)
        import trackline

        def on_error(error, messages):
            for message in messages:
                state["drops"][message["messageId"]] = str(error.reason)

        client = trackline.Client(
            "k", host={url!r}, shutdown_timeout=1.0, timeout=30.0, flush_at=50,
            backoff_base=0.05, backoff_cap=0.2, max_retries=1000, on_error=on_error,
        )
        state["sent"] = [client.track("u", "E", {{"i": i}}) for i in range(500)]
        if {fault!r} == "sigterm":
            def on_term(*_):
                state["ended"] = time.monotonic()
                sys.exit(143)

            signal.signal(signal.SIGTERM, on_term)
            print("ready", flush=True)
            time.sleep(30)
        state["ended"] = time.monotonic()
        """
    )


@pytest.mark.parametrize("fault", ["down", "black hole", "sigterm"])
def test_c16_c17_exit_during_an_outage_is_bounded_and_counts_the_leftovers(
    fault: str, proxy: FaultProxy, store: CollectorStore, ledger: Ledger
) -> None:
    """A program ending (normally, or on SIGTERM turned into SystemExit, as servers do) while
    the collector is down or a black hole exits within shutdown_timeout (1 s) plus 0.2 s, and
    every event it sent is reported dropped as shutdown_timeout, none lost silently."""
    if fault == "black hole":
        proxy.add(BlackHole())
    else:
        proxy.down()
    process = subprocess.Popen(
        [sys.executable, "-c", _exit_script(proxy.url, fault)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if fault == "sigterm":
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == (143 if fault == "sigterm" else 0), err
    state = json.loads(out.strip().splitlines()[-1])
    assert state["exit_seconds"] < 1.2, state["exit_seconds"]
    ledger.adopt(state["sent"], state["drops"])
    account = ledger.settle(trackline.Stats(**state["stats"]), store)
    account.assert_exact()
    assert account.dropped == {"shutdown_timeout": 500}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_c18_fork_with_a_batch_in_flight_sends_everything_once(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Forking while the parent has a batch on a slow wire and more queued: the child delivers
    only its own events and its flush returns promptly; the parent delivers its own; nothing is
    stored twice and each process accounts exactly for what it sent."""
    proxy.add(Latency(seconds=0.3, direction=Direction.DOWNSTREAM))
    client = ledger_client(proxy.url, flush_at=20, flush_interval=5.0)
    ledger.track_many(client, 20)
    deadline = time.monotonic() + 5
    while client.stats.in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    ledger.track_many(client, 5)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            # The ledger was copied by fork: what the child adds after this point is its own.
            before = len(ledger.sent)
            ledger.track_many(client, 30)
            started = time.monotonic()
            flushed = client.flush(5)
            stats = client.stats
            sent = ledger.sent[before:]
            record = {
                "sent": sent,
                "drops": {mid: why for mid, why in ledger.drops.items() if mid in sent},
                "flushed": flushed,
                "flush_seconds": time.monotonic() - started,
                "stats": {
                    "enqueued": stats.enqueued,
                    "delivered": stats.delivered,
                    "dropped": dict(stats.dropped),
                    "queued": stats.queued,
                    "in_flight": stats.in_flight,
                    "retries": stats.retries,
                    "batches": stats.batches,
                    "bytes_sent": stats.bytes_sent,
                },
            }
            os.write(write_end, json.dumps(record).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        record: dict[str, Any] = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(5)
    assert record["flushed"]
    assert record["flush_seconds"] < 2.0
    rows = store.stored_ids()
    child_ids = set(record["sent"])
    parent_account = ledger.settle(client, [row for row in rows if row not in child_ids])
    parent_account.assert_exact()
    child = Ledger("child")
    child.adopt(record["sent"], record["drops"])
    child_account = child.settle(
        trackline.Stats(**record["stats"]), [row for row in rows if row in child_ids]
    )
    child_account.assert_exact()
    assert (parent_account.stored, child_account.stored) == (25, 30)
    assert len(rows) == len(set(rows)) == 55


KILLED_SCRIPT = """
import sys, time
import trackline
client = trackline.Client("k", host=sys.argv[1], max_queue_size=200, flush_at=50)
n = 0
while True:
    message_id = f"killed-{n}"
    if client.track("u", "E", message_id=message_id) is not None:
        print(message_id, flush=True)
    n += 1
    time.sleep(0.0005)
"""


def test_c14_kill_9_loses_at_most_what_was_queued(proxy: FaultProxy, store: CollectorStore) -> None:
    """kill -9 of a sending process (memory mode) loses what was queued or in flight at that
    moment, and nothing else: every accepted event is stored except at most the buffer's bound
    and the batch on the wire; durable mode (`spool=`) is there for the rest."""
    proxy.add(Latency(seconds=0.05, direction=Direction.DOWNSTREAM))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, proxy.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    accepted = [child.stdout.readline().strip() for _ in range(1000)]
    child.kill()
    rest, _ = child.communicate(timeout=10)
    accepted += rest.split()
    time.sleep(0.2)  # a batch the collector was committing when the sender died
    stored = set(store.stored_ids())
    assert stored <= set(accepted)
    # The queue (200 at most) and the batch on the wire (which took at most as many).
    lost = len(accepted) - len(stored)
    assert lost <= 2 * 200, (lost, len(accepted))
