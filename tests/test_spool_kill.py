"""Durable mode against kill -9: a process tracking in a loop is killed at random points and
restarted on the same spool; every message whose call returned ends up stored by the
collector, and none is stored twice.

Each round starts `tests/support/spool_child.py` (which first adopts and sends what the killed
rounds left), lets it track for a random time, and SIGKILLs it: during a commit, a read, a
request, a delete, or the adoption of the previous round's file. Rounds alternate between the
live collector and a host that refuses connections (an outage), so kills also land while
batches are being retried or given back. A last client drains the spool to the collector.
"""

from __future__ import annotations

import pathlib
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import trackline
from trackline.collector.server import RunningCollector, serve


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[RunningCollector]:
    """The local collector (which dedupes on messageId) on a fresh database."""
    with serve(tmp_path / "events.sqlite3") as running:
        yield running


def refused_url() -> str:
    """A loopback URL where nothing listens: every request is refused, as in an outage."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def kill_rounds(
    spool: pathlib.Path, ids: pathlib.Path, hosts: list[str], rng: random.Random
) -> None:
    """Run one child per host, each SIGKILLed at a random moment after it is ready."""
    for host in hosts:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.spool_child", str(spool), host, str(ids)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr
            time.sleep(rng.uniform(0.0, 0.25))
            assert child.poll() is None, "the child ended before it was killed"
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()


def returned_ids(path: pathlib.Path) -> list[str]:
    """Ids the children wrote after their calls returned (a line cut by a kill is not one)."""
    text = path.read_text()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]


def stored_rows(database: pathlib.Path) -> list[str]:
    """Every messageId row the collector stored, duplicates kept."""
    db = sqlite3.connect(database)
    try:
        return [row[0] for row in db.execute("SELECT message_id FROM events")]
    finally:
        db.close()


def drain(spool: pathlib.Path, host: str) -> trackline.Stats:
    """Start one more client on the spool and let it deliver everything that was left."""
    client = trackline.Client("spool-key", host=host, spool=spool, flush_interval=0.02)
    try:
        assert client.flush(20)
    finally:
        client.shutdown(5)
    return client.stats


def check_stored(
    tmp_path: pathlib.Path, collector: RunningCollector, ids: pathlib.Path, kills: int
) -> None:
    returned = returned_ids(ids)
    stored = stored_rows(tmp_path / "events.sqlite3")
    assert len(stored) == len(set(stored)), "a message was stored twice"
    missing = set(returned) - set(stored)
    assert not missing, f"{len(missing)} of {len(returned)} returned messages were lost"
    # A kill between a call's return and the write of its id stores a message the file
    # does not list: at most one per kill.
    assert len(set(stored) - set(returned)) <= kills
    assert len(returned) > kills


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_returned_message_survives_kill_9_and_is_stored_once(
    tmp_path: pathlib.Path, collector: RunningCollector, seed: int
) -> None:
    """Six SIGKILLs at random points (half of them during an outage), then a drain: every
    message whose call returned is stored, none twice, and the drain accounts for all."""
    rng = random.Random(seed)
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    hosts = [collector.url if index % 2 else refused_url() for index in range(6)]
    kill_rounds(spool, ids, hosts, rng)
    stats = drain(spool, collector.url)
    assert stats.unaccounted == 0, stats
    assert stats.dropped == {}, stats
    check_stored(tmp_path, collector, ids, kills=len(hosts))
    assert list(spool.glob("spool-*.sqlite")) == []


@pytest.mark.slow
def test_two_hundred_kills(tmp_path: pathlib.Path, collector: RunningCollector) -> None:
    """The same, 200 times over on one spool (run with `-m slow`)."""
    rng = random.Random(200)
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    hosts = [collector.url if rng.random() < 0.6 else refused_url() for _ in range(200)]
    kill_rounds(spool, ids, hosts, rng)
    stats = drain(spool, collector.url)
    assert stats.unaccounted == 0, stats
    assert stats.dropped == {}, stats
    check_stored(tmp_path, collector, ids, kills=len(hosts))
