"""Helpers for the destinations' tests: webhook receivers (the capture server, answering as
scripted), a collector serving with destinations, and waits for queues to drain."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.collector.conftest import Http, message
from tests.collector.destinations.pg import pg_schema  # noqa: F401 (a fixture)
from tests.support.capture import Captured, CaptureServer, Reply
from trackline.collector import RunningCollector, serve
from trackline.collector.destinations import DestinationConfig, parse

#: Fast retries, so fault tests take milliseconds of backoff, not seconds.
FAST: dict[str, Any] = {"backoff_base": 0.02, "backoff_cap": 0.1, "timeout": 2.0}


def hook_events(server: CaptureServer, *, answered: Sequence[int] = (200,)) -> list[dict[str, Any]]:
    """Every event a webhook receiver took (answered with a status in `answered`), in
    arrival order; a body is one event or an array of them."""
    taken: list[dict[str, Any]] = []
    for request in list(server.requests):
        complete = len(request.raw) == int(request.headers.get("content-length", "0"))
        if request.status in answered and complete:
            taken += _events(request)
    return taken


def _events(request: Captured) -> list[dict[str, Any]]:
    document = orjson.loads(request.body)
    return document if isinstance(document, list) else [document]


def hook_ids(server: CaptureServer) -> list[str]:
    return [event["messageId"] for event in hook_events(server)]


def destinations(*tables: dict[str, Any]) -> list[DestinationConfig]:
    """Destination configs from `[[destination]]`-like tables."""
    return parse({"destination": list(tables)})


def webhook(name: str, server: CaptureServer, **settings: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": server.url + "/hook", **settings}


def events(*numbers: int, **fields: Any) -> list[dict[str, Any]]:
    return [message(n, **fields) for n in numbers]


def post(http: Http, batch: list[dict[str, Any]]) -> dict[str, Any]:
    answer = http.post("/v1/batch", {"batch": batch})
    assert answer.status == 200, answer.body
    document: dict[str, Any] = answer.json
    return document


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `condition` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def destination_table(http: Http) -> dict[str, dict[str, Any]]:
    answer = http.get("/api/destinations")
    assert answer.status == 200, answer.body
    return {row["name"]: row for row in answer.json}


def drained(http: Http, timeout: float = 20.0) -> dict[str, dict[str, Any]]:
    """Wait until no destination has pending or retrying jobs; returns the table."""

    def quiet() -> dict[str, dict[str, Any]] | None:
        table = destination_table(http)
        busy = any(row["pending"] or row["retrying"] for row in table.values())
        return None if busy else table

    result: dict[str, dict[str, Any]] = wait_until(quiet, timeout, "the queues to drain")
    return result


def fail_first(server: CaptureServer, times: int, *, within: int | None = None) -> dict[str, int]:
    """Make `server` answer 500 to the first `times` requests carrying message-0 (of at most
    `within` bytes, when given); `["left"]` of the answer counts the 500s still to give."""
    failures = {"left": times}

    def rule(body: bytes) -> Reply | None:
        if b'"message-0"' in body and failures["left"] and len(body) <= (within or len(body)):
            failures["left"] -= 1
            return Reply(500)
        return None

    server.rule = rule
    return failures


def deliveries(http: Http, message_id: str) -> dict[str, dict[str, Any]]:
    answer = http.get(f"/api/events/{message_id}/deliveries")
    assert answer.status == 200, answer.body
    return {row["destination"]: row for row in answer.json}


@pytest.fixture
def hook() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[RunningCollector, Http]]]:
    """Start a collector with the given destination configs; stopped at the end."""
    started: list[Any] = []

    def run(configs: list[DestinationConfig], **options: Any) -> tuple[RunningCollector, Http]:
        context = serve(tmp_path / "events.sqlite3", destinations=configs, **options)
        running = context.__enter__()
        started.append(context)
        return running, Http(running.url)

    yield run
    for context in reversed(started):
        context.__exit__(None, None, None)
