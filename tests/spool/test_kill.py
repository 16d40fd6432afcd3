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
import time

import pytest

from tests.support.spool_support import (
    drain,
    kill_child,
    refused_url,
    returned_ids,
    start_child,
    stored_ids,
)
from trackline.collector.server import RunningCollector


def kill_rounds(
    spool: pathlib.Path, ids: pathlib.Path, hosts: list[str], rng: random.Random
) -> None:
    """Run one child per host, each SIGKILLed at a random moment after it is ready."""
    for host in hosts:
        child = start_child(spool, host, ids)
        try:
            time.sleep(rng.uniform(0.0, 0.25))
            assert child.poll() is None, "the child ended before it was killed"
        finally:
            kill_child(child)


def check_stored(
    tmp_path: pathlib.Path, collector: RunningCollector, ids: pathlib.Path, kills: int
) -> None:
    returned = returned_ids(ids)
    stored = stored_ids(tmp_path / "events.sqlite3")
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
    stats = drain(spool, collector.url, timeout=300)
    assert stats.unaccounted == 0, stats
    assert stats.dropped == {}, stats
    check_stored(tmp_path, collector, ids, kills=len(hosts))
