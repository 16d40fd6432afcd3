"""The soak (reliability research, table B1, c23): a client sending steadily for a long time
while the fault proxy rotates through outages, lost answers, resets and black holes.

Slow tier only. `TRACKLINE_SOAK_SECONDS` sets the length (60 s by default; the research's
release gate is two hours). The collector runs in its own process so that this process's
memory, threads and file descriptors are the client's (and the proxy's) alone.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import trackline
from tests.collector.test_cli import Process
from tests.support.faultproxy import (
    BlackHole,
    Direction,
    DropResponse,
    FaultProxy,
    Latency,
    ResetPeer,
    Toxic,
)
from tests.support.ledger import CollectorStore, Ledger

#: Seconds each fault (or calm spell) lasts.
PHASE_SECONDS = 3.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


FAULTS = ("calm", "down", "lost answers", "resets", "black hole", "slow")
ROUND = len(FAULTS)


def faults() -> itertools.cycle[str]:
    return itertools.cycle(FAULTS)


def toxics_for(fault: str) -> list[Toxic]:
    if fault == "lost answers":
        return [DropResponse(toxicity=0.3)]
    if fault == "resets":
        return [ResetPeer(after_bytes=200, toxicity=0.3)]
    if fault == "black hole":
        return [BlackHole(times=2)]
    if fault == "slow":
        return [Latency(seconds=0.2, jitter=0.1, direction=Direction.DOWNSTREAM)]
    return []


@pytest.mark.slow
def test_c23_soak_under_rotating_faults(tmp_path: Path, ledger: Ledger) -> None:
    """About 500 events a second through rotating faults: accounting stays exact (nothing lost,
    nothing stored twice, nothing dropped), and memory, threads and file descriptors stop
    growing once the first round of faults is done."""
    duration = float(os.environ.get("TRACKLINE_SOAK_SECONDS", "60"))
    db = tmp_path / "events.sqlite3"
    collector = Process(["collector", "--port", "0", "--db", str(db)])
    try:
        with FaultProxy(collector.wait_listening(), seed=23) as proxy:
            # Ids are "soak-<n>" and only drops are remembered while it runs, so that the
            # ledger does not grow with every event; it learns what was sent at the end.
            drops: dict[str, str] = {}

            def on_error(error: Any, messages: list[dict[str, Any]]) -> None:
                for message in messages:
                    drops[message["messageId"]] = str(error.reason)

            sent = itertools.count()
            client = trackline.Client(
                "soak-key",
                host=proxy.url,
                on_error=on_error,
                timeout=1.0,
                flush_interval=0.1,
                backoff_base=0.05,
                backoff_cap=1.0,
                # Outages last a few seconds: the retry budget is delivery_timeout, not a count.
                max_retries=1000,
            )
            producing = threading.Event()
            producing.set()

            def produce() -> None:
                while producing.is_set():
                    for _ in range(10):
                        client.track("soak", "Soak", message_id=f"soak-{next(sent)}")
                    time.sleep(0.02)

            producer = threading.Thread(target=produce)
            producer.start()
            samples: list[tuple[int, int, int]] = []
            started = time.monotonic()
            try:
                for fault in faults():
                    if time.monotonic() - started > duration:
                        break
                    proxy.clear()
                    if proxy.is_down:
                        proxy.up()
                    if fault == "down":
                        proxy.down()
                    for toxic in toxics_for(fault):
                        proxy.add(toxic)
                    time.sleep(PHASE_SECONDS)
                    samples.append((rss_bytes(), threading.active_count(), open_fds()))
            finally:
                producing.clear()
                producer.join()
                proxy.clear()
                if proxy.is_down:
                    proxy.up()
            assert client.flush(60)
            client.shutdown(5)
        ledger.adopt([f"soak-{n}" for n in range(next(sent))], drops)
        account = ledger.settle(client, CollectorStore(db))
    finally:
        collector.stop()
    account.assert_exact()
    assert not account.dropped
    # After the first round of faults, everything that will ever be allocated has been.
    settled = samples[ROUND:] or samples[-1:]
    rss = [sample[0] for sample in settled]
    print(f"soak: rss MiB {[round(r / 2**20, 1) for r in rss]}, threads/fds {samples[-1][1:]}")
    assert max(rss) - min(rss) < 16 * 1024 * 1024, [r // 1024 for r in rss]
    assert len({sample[1] for sample in settled}) == 1, samples
    assert max(sample[2] for sample in settled) - min(sample[2] for sample in settled) <= 4
