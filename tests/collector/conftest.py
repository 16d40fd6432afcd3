"""Fixtures for the collector's tests: a collector serving a fresh SQLite file on 127.0.0.1,
an HTTP helper that speaks to it, and the shared spec examples."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip as gzip_module
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from trackline.collector import RunningCollector, serve
from trackline.collector.access import key_id

SPEC = Path(__file__).parent.parent / "spec"


def spec(name: str) -> Any:
    """One of the shared wire examples in tests/spec/."""
    return json.loads((SPEC / name).read_text())


def basic(key: str, colon: bool = True) -> str:
    """An HTTP Basic header value for `key` with an empty password."""
    return "Basic " + base64.b64encode(f"{key}{':' if colon else ''}".encode()).decode()


@dataclasses.dataclass
class Answer:
    status: int
    headers: urllib3.HTTPHeaderDict
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Http:
    """A small client for one collector: JSON in, `Answer` out, gzip and auth on request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = urllib3.PoolManager(retries=False, timeout=10.0)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        response = self.pool.request(
            method, self.url + path, body=body, headers=headers, preload_content=True
        )
        return Answer(response.status, response.headers, response.data)

    def post(
        self,
        path: str,
        document: Any = None,
        *,
        raw: bytes | None = None,
        key: str | None = "key",
        gzip: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        body = raw if raw is not None else orjson.dumps(document)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent.setdefault("Authorization", basic(key))
        if gzip:
            body = gzip_module.compress(body)
            sent["Content-Encoding"] = "gzip"
        return self.request("POST", path, body, sent)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def events(self, query: str = "") -> list[dict[str, Any]]:
        answer = self.get(f"/api/events{query}")
        assert answer.status == 200, answer.body
        found: list[dict[str, Any]] = answer.json["events"]
        return found


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite3"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """A collector accepting any key, with short deadlines so slow-client tests stay fast;
    shared by a module's tests (starting one costs more than most tests), emptied for each."""
    path = tmp_path_factory.mktemp("collector") / "events.sqlite3"
    with serve(path, header_timeout=1.0, body_timeout=1.0, lock_timeout=0.2) as running:
        yield running


@contextlib.contextmanager
def emptied(collector: RunningCollector) -> Iterator[Http]:
    """A client of `collector`, whose store is emptied first."""
    client = Http(collector.url)
    assert client.request("DELETE", "/api/events").status == 200
    try:
        yield client
    finally:
        client.pool.clear()


@pytest.fixture
def http(collector: RunningCollector) -> Iterator[Http]:
    """A client of the shared collector, whose store starts empty."""
    with emptied(collector) as client:
        yield client


def source_of(collector: RunningCollector, key: str) -> str:
    """The key id a collector stores and shows for the write key `key`."""
    return key_id(collector.storage.key_secret, key)


def stored_ids(path: Path) -> set[str]:
    """The messageIds in a collector's database file, read directly."""
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT message_id FROM events")}
    finally:
        conn.close()


def message(n: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid track message with a distinct messageId."""
    return {
        "type": "track",
        "userId": f"user-{n}",
        "event": "Item Purchased",
        "messageId": f"message-{n}",
        "timestamp": "2026-11-28T14:00:00.000Z",
        **fields,
    }
