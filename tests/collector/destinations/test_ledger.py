"""Proof with a ledger, per event and destination, against real receivers and files:

- healthy: every acknowledged event reaches every destination `integrations` selected exactly
  once, and no other;
- kill -9 of the collector ten times while it delivers, a receiver answering 500 at random, and
  one destination down for the whole run: every acknowledged event is stored once and reaches
  every selected healthy destination at least once, in per-user stored order, never one it did
  not select; the down destination's queue holds every event owed to it, then drains when it
  comes back.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import (
    FAST,
    destinations,
    drained,
    hook_events,
    hook_ids,
    post,
    wait_until,
    webhook,
)
from tests.support.capture import CaptureServer, Reply
from tests.support.collector_process import CollectorProcess, free_port
from tests.support.delivery_ledger import DeliveryLedger
from trackline.collector import RunningCollector
from trackline.collector.destinations import DestinationConfig

Start = Callable[..., tuple[RunningCollector, Http]]
TYPES = ["track"] * 6 + ["identify", "page"]
CHOICES: list[Any] = [
    None,
    None,
    None,
    {"All": False, "Hook": True},
    {"Batch": False},
    {"Files": {"folder": "x"}},
    {"All": False},
]


def make_events(rng: random.Random, start: int, count: int) -> list[dict[str, Any]]:
    made = []
    for n in range(start, start + count):
        kind = rng.choice(TYPES)
        message: dict[str, Any] = {
            "type": kind,
            "messageId": f"ledger-{n}",
            "userId": f"user-{rng.randrange(25)}",
            "properties": {"seq": n},
        }
        if kind == "track":
            message["event"] = "Item Purchased"
        elif kind == "page":
            message["name"] = "Home"
        integrations = rng.choice(CHOICES)
        if integrations is not None:
            message["integrations"] = integrations
        made.append(message)
    return made


def file_ids(folder: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(folder.glob("*/*.ndjson*")):
        found += [orjson.loads(line)["messageId"] for line in path.read_text().splitlines()]
    return found


def stored_order(db: Path) -> tuple[list[str], dict[str, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT message_id, user_id FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows], {row[0]: row[1] for row in rows}


def assert_user_order(received: list[str], order: list[str], users: dict[str, str]) -> None:
    """Per user, the first arrival of each event follows stored order."""
    rank = {mid: index for index, mid in enumerate(order)}
    seen: set[str] = set()
    last: dict[str, int] = {}
    for mid in received:
        if mid in seen:
            continue
        seen.add(mid)
        user = users[mid]
        assert rank[mid] > last.get(user, -1), f"{mid} overtook an earlier event of {user}"
        last[user] = rank[mid]


def test_a_healthy_run_delivers_each_selected_event_exactly_once(
    start: Start, hook: CaptureServer, tmp_path: Path
) -> None:
    with CaptureServer() as batch:
        configs = destinations(
            webhook("Hook", hook, concurrency=2),
            webhook("Batch", batch, batch_size=25),
            {"name": "Files", "kind": "file", "path": str(tmp_path / "exports")},
        )
        _, http = start(configs)
        ledger = DeliveryLedger(configs)
        rng = random.Random(12)
        for first in range(0, 600, 50):
            chunk = make_events(rng, first, 50)
            post(http, chunk)
            ledger.acknowledge(chunk)
        drained(http)
        order, users = stored_order(tmp_path / "events.sqlite3")
        settled = ledger.settle(
            order,
            {
                "Hook": hook_ids(hook),
                "Batch": hook_ids(batch),
                "Files": file_ids(tmp_path / "exports"),
            },
        )
        settled.assert_exact(exactly_once=True)
        for server in (hook, batch):
            assert_user_order(hook_ids(server), order, users)


class Sender(threading.Thread):
    """Posts batches until told to stop, resending a batch until it is answered 200."""

    def __init__(self, url: str, ledger: DeliveryLedger, seed: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.sent = 0
        self.errors: list[str] = []

    def run(self) -> None:
        pool = urllib3.PoolManager(retries=False, timeout=10.0)
        number = 0
        while not self.stop.is_set():
            chunk = make_events(self.rng, number, 40)
            number += 40
            body = orjson.dumps({"batch": chunk})
            while True:
                try:
                    answer = pool.request(
                        "POST",
                        self.url + "/v1/batch",
                        body=body,
                        headers={"Content-Type": "application/json", "Authorization": "Basic az0="},
                    )
                except urllib3.exceptions.HTTPError:
                    time.sleep(0.05)
                    continue
                if answer.status == 200:
                    self.ledger.acknowledge(chunk)
                    self.sent += len(chunk)
                    break
                if answer.status != 503:
                    self.errors.append(f"HTTP {answer.status}: {answer.data[:200]!r}")
                    return
                time.sleep(0.05)
            time.sleep(0.01)


def run_with_kills(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    down_port = free_port()
    with CaptureServer() as hook, CaptureServer() as batch:
        # The second receiver refuses one request in six with a 500, at random.
        batch.rule = lambda body: Reply(500) if rng.random() < 1 / 6 else None
        tables: list[dict[str, Any]] = [
            webhook("Hook", hook, concurrency=2, **FAST),
            webhook("Batch", batch, batch_size=25, **FAST),
            {"name": "Files", "kind": "file", "path": str(tmp_path / "exports"), **FAST},
            {
                "name": "Down",
                "kind": "webhook",
                "url": f"http://127.0.0.1:{down_port}/hook",
                **FAST,
            },
        ]
        config = tmp_path / "trackline.toml"
        config.write_text(_toml(tables))
        configs: list[DestinationConfig] = destinations(*tables)
        ledger = DeliveryLedger(configs)
        collector = CollectorProcess(tmp_path / "events.sqlite3", config)
        collector.start()
        sender = Sender(collector.url, ledger, seed)
        sender.start()
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 0.6))
                collector.kill()
                collector.start()
            sender.stop.set()
            sender.join(30)
            assert not sender.errors, sender.errors
            collector.kill()  # once more, with the queues full
            collector.start()
            http = Http(collector.url)

            def healthy_drained() -> bool:
                table = {row["name"]: row for row in http.get("/api/destinations").json}
                return all(
                    table[name]["pending"] + table[name]["retrying"] == 0
                    for name in ("Hook", "Batch", "Files")
                )

            wait_until(healthy_drained, 120, "the healthy destinations to drain")
            order, users = stored_order(collector.db)
            received = {
                "Hook": hook_ids(hook),
                "Batch": hook_ids(batch),
                "Files": file_ids(tmp_path / "exports"),
                "Down": [],
            }
            settled = ledger.settle(order, {k: v for k, v in received.items() if k != "Down"})
            settled.assert_exact(exactly_once=False)
            assert sender.sent >= 400, settled
            for server in (hook, batch):
                assert_user_order(hook_ids(server), order, users)
            assert len(set(order)) == len(order)
            table = {row["name"]: row for row in http.get("/api/destinations").json}
            owed_down = len(ledger.selected("Down"))
            assert table["Down"]["delivered"] == 0
            assert table["Down"]["pending"] + table["Down"]["retrying"] == owed_down
            assert all(table[name]["failed"] == 0 for name in table)
            # The down destination comes back: its queue drains, each selected event once or more.
            with CaptureServer(port=down_port) as back:
                drained(http, timeout=120)
                late = ledger.settle(order, {"Down": hook_ids(back)})
                late.assert_exact(exactly_once=False)
                assert_user_order(hook_ids(back), order, users)
                assert [e["messageId"] for e in hook_events(back)]
        finally:
            sender.stop.set()
            collector.stop()


def _toml(tables: list[dict[str, Any]]) -> str:
    lines = []
    for table in tables:
        lines.append("[[destination]]")
        for key, value in table.items():
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    return "\n".join(lines) + "\n"


def test_kill_9_ten_times_while_delivering_loses_nothing(tmp_path: Path) -> None:
    run_with_kills(tmp_path, kills=10, seed=7)


@pytest.mark.slow
def test_kill_9_many_times_while_delivering_loses_nothing(tmp_path: Path) -> None:
    run_with_kills(tmp_path, kills=40, seed=8)
