"""`GET /api/events` page by page (`next`, `cursor`, `order`) and as an NDJSON export
(`format=ndjson`), over HTTP from real collectors on 127.0.0.1: SQLite files and PostgreSQL."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from tests.collector.conftest import Http, message
from tests.collector.test_security_limits import fill
from tests.support.collector_process import CollectorProcess, PeakMemory
from trackline.collector import RunningCollector, serve
from trackline.collector.store import EventQuery, SQLiteStore, StorageError


def post(http: Http, numbers: range, **fields: Any) -> None:
    answer = http.post("/v1/batch", {"batch": [message(n, **fields) for n in numbers]})
    assert answer.status == 200, answer.body


def walk(http: Http, query: str = "") -> Iterator[dict[str, Any]]:
    """Each answer of a walk through `/api/events?{query}`, following `next` to the end."""
    cursor: str | None = None
    while True:
        extra = "" if cursor is None else "&cursor=" + urllib.parse.quote(cursor)
        answer = http.get(f"/api/events?{query}{extra}")
        assert answer.status == 200, answer.body
        document: dict[str, Any] = answer.json
        yield document
        cursor = document["next"]
        if cursor is None:
            return


def walked(http: Http, query: str = "") -> list[str]:
    return [event["messageId"] for page in walk(http, query) for event in page["events"]]


def names(numbers: range) -> list[str]:
    return [f"message-{n}" for n in numbers]


def export(http: Http, query: str = "") -> list[dict[str, Any]]:
    answer = http.get(f"/api/events?format=ndjson&{query}")
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"] == "application/x-ndjson"
    assert answer.body == b"" or answer.body.endswith(b"\n")
    return [orjson.loads(line) for line in answer.body.splitlines()]


def test_pages_carry_next_until_the_end(http: Http) -> None:
    """Each answer has `next`; passing it back as `cursor` continues; null at the end. An
    answer's first page is what `/api/events` always answered (the newest, newest first)."""
    post(http, range(250))
    pages = list(walk(http, "limit=100"))
    assert [len(page["events"]) for page in pages] == [100, 100, 50]
    assert [page["next"] is None for page in pages] == [False, False, True]
    assert isinstance(pages[0]["next"], str)
    assert walked(http, "limit=100") == names(range(249, -1, -1))
    assert walked(http, "limit=100&order=asc") == names(range(250))
    assert http.get("/api/events?limit=250").json["next"] is None


def test_a_cursor_keeps_its_filters_and_order(http: Http) -> None:
    """Filters are sent with every page and hold on each; a cursor walks in the order it was
    made for (order may be left out, or must match)."""
    post(http, range(0, 60, 2), userId="even")
    post(http, range(1, 60, 2), userId="odd")
    assert walked(http, "user_id=odd&limit=7") == names(range(59, 0, -2))
    assert walked(http, "user_id=even&limit=7&order=asc") == names(range(0, 60, 2))
    first = http.get("/api/events?order=asc&limit=5").json
    continued = http.get(f"/api/events?limit=5&cursor={first['next']}").json
    assert [e["messageId"] for e in continued["events"]] == names(range(10, 20, 2))
    mismatch = http.get(f"/api/events?order=desc&cursor={first['next']}")
    assert (mismatch.status, mismatch.json["code"]) == (400, "invalid_parameter")
    assert mismatch.json["message"].startswith("cursor")


@pytest.mark.parametrize(
    "cursor", ["", "x", "d", "d-5", "d1.2", "a5", "a1.x", "d" + "9" * 19, "d12 ", "%00", "D12"]
)
def test_a_bad_cursor_is_400_naming_it(http: Http, cursor: str) -> None:
    answer = http.get("/api/events?cursor=" + urllib.parse.quote(cursor))
    if cursor == "":
        assert answer.status == 200  # empty: no cursor, as empty filters are none
        return
    assert (answer.status, answer.json["code"]) == (400, "invalid_parameter")
    assert answer.json["message"].startswith("cursor ")


def test_other_parameters_are_checked(http: Http) -> None:
    for query, field in [("order=up", "order"), ("format=csv", "format"), ("limit=10001", "limit")]:
        answer = http.get(f"/api/events?{query}")
        assert (answer.status, answer.json["code"]) == (400, "invalid_parameter"), query
        assert answer.json["message"].startswith(field)
    assert http.get("/api/events?format=ndjson&limit=0").status == 400


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_a_walk_while_events_arrive_sees_each_earlier_event_once(http: Http, order: str) -> None:
    """A thread keeps posting while a walk pages through: every event stored before the walk
    began is seen exactly once, and none stored after it."""
    post(http, range(2000))
    stop = threading.Event()
    posted = threading.Event()
    sender = Http(http.url)
    count = [0]

    def keep_posting() -> None:
        while not stop.is_set():
            start = 10_000 + count[0]
            post(sender, range(start, start + 20))
            count[0] += 20
            posted.set()

    pages = walk(http, f"limit=83&order={order}")
    seen = [event["messageId"] for event in next(pages)["events"]]
    thread = threading.Thread(target=keep_posting)
    thread.start()
    try:
        for page in pages:
            seen += [event["messageId"] for event in page["events"]]
            assert posted.wait(10)
    finally:
        stop.set()
        thread.join()
    assert count[0] > 0
    assert len(seen) == len(set(seen))
    assert set(seen) == set(names(range(2000)))


def test_a_search_page_without_a_match_still_names_the_next(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`q` and `source` look at a window of MAX_SCAN_ROWS events per page: a page that found
    fewer than `limit` there still has a `next` while older events remain, so a walk reaches
    every match (a listing without a cursor is the first window only, as before)."""
    monkeypatch.setattr("trackline.collector.store.sqlite.MAX_SCAN_ROWS", 100)
    with serve(db_path) as running:
        http = Http(running.url)
        post(http, range(300), properties={"colour": "grey"})
        post(http, range(300, 301), properties={"colour": "teal"})
        post(http, range(301, 500), properties={"colour": "grey"})
        first = http.get("/api/events?q=teal").json
        assert first["events"] == []
        assert first["next"] is not None
        assert walked(http, "q=teal") == ["message-300"]
        assert walked(http, "q=teal&order=asc") == ["message-300"]
        assert len(list(walk(http, "q=teal"))) == 5
        assert len(export(http, "q=grey")) == 499


def test_the_export_is_every_event_one_a_line(http: Http) -> None:
    """`format=ndjson` streams every page (no limit unless given), newest first unless
    `order=asc`, filters and `meta` as the listing has them."""
    post(http, range(25_000, 25_120), userId="someone")
    post(http, range(120), properties={"city": "Zürich\nLine"})
    lines = export(http)
    assert [m["messageId"] for m in lines] == names(range(119, -1, -1)) + names(
        range(25_119, 24_999, -1)
    )
    assert lines[0]["properties"]["city"] == "Zürich\nLine"
    oldest = export(http, "order=asc&user_id=someone")
    assert [m["messageId"] for m in oldest] == names(range(25_000, 25_120))
    assert len(export(http, "limit=7")) == 7
    assert [m["messageId"] for m in export(http, "order=asc&limit=3")] == names(
        range(25_000, 25_003)
    )
    wrapped = export(http, "meta=1&limit=2")
    assert set(wrapped[0]) == {"id", "source", "message"}
    assert wrapped[0]["id"] > wrapped[1]["id"]
    assert export(http, "user_id=nobody") == []


def test_the_export_walks_pages_of_its_own(http: Http, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export reads MAX_EVENTS_LIMIT events a page (here 7) until the end."""
    monkeypatch.setattr("trackline.collector.reading.MAX_EVENTS_LIMIT", 7)
    post(http, range(50))
    assert [m["messageId"] for m in export(http, "order=asc")] == names(range(50))
    assert len(export(http, "limit=15")) == 15


def _export_peak_growth(db: Path) -> tuple[int, int]:
    """(bytes exported, growth of the collector process's peak RSS while exporting)."""
    collector = CollectorProcess(db)
    collector.start()
    try:
        http = Http(collector.url)
        assert len(export(http, "limit=20000")) == 20_000  # warm: code paths and caches
        memory = PeakMemory(collector.pid)
        response = http.pool.request(
            "GET", collector.url + "/api/events?format=ndjson&order=asc", preload_content=False
        )
        size = sum(len(chunk) for chunk in response.stream(1 << 16))
        return size, memory.growth()
    finally:
        collector.stop()


def test_an_export_keeps_the_collector_memory_flat(tmp_path: Path) -> None:
    """Exporting 200,000 events of 1 KB (a 250 MB answer) raises the collector's peak memory
    no more than exporting 20,000 does, give or take a few MB: one piece in memory at a time,
    whatever the store holds."""
    small, large = tmp_path / "small.sqlite3", tmp_path / "large.sqlite3"
    fill(small, 20_000, 1000)
    fill(large, 200_000, 1000)
    small_size, small_growth = _export_peak_growth(small)
    large_size, large_growth = _export_peak_growth(large)
    assert large_size > 9 * small_size > 9 * 20_000_000
    assert large_growth < small_growth + 16 * 1024 * 1024, (small_growth, large_growth)
    assert large_growth < 32 * 1024 * 1024


def test_paging_and_export_on_postgresql(pg_url: str) -> None:
    """The same reads from a collector on PostgreSQL: pages with `next`, a walk while events
    arrive, the export."""
    with serve(pg_url) as running:
        http = Http(running.url)
        post(http, range(300))
        assert walked(http, "limit=64") == names(range(299, -1, -1))
        assert walked(http, "limit=64&order=asc") == names(range(300))
        assert [m["messageId"] for m in export(http, "order=asc")] == names(range(300))
        pages = walk(http, "limit=50")
        seen = [e["messageId"] for e in next(pages)["events"]]
        post(http, range(1000, 1100))
        seen += [e["messageId"] for page in pages for e in page["events"]]
        assert seen == names(range(299, -1, -1))
        bad = http.get("/api/events?cursor=zzz")
        assert (bad.status, bad.json["code"]) == (400, "invalid_parameter")


def test_the_export_follows_the_read_rules(db_path: Path) -> None:
    """A collector with a read token exports to its bearer only."""
    token = "read-token-for-tests-0123456789"
    with serve(db_path, read_token=token) as running:
        http = Http(running.url)
        assert http.get("/api/events?format=ndjson").status == 401
        answer = http.request(
            "GET", "/api/events?format=ndjson", headers={"Authorization": f"Bearer {token}"}
        )
        assert (answer.status, answer.body) == (200, b"")


def test_running_collector_is_shared_fixture_safe(collector: RunningCollector) -> None:
    """The module's shared collector answers the new fields on an empty store."""
    http = Http(collector.url)
    assert http.request("DELETE", "/api/events").status == 200
    assert http.get("/api/events").json == {"events": [], "next": None}


class _FailingLater(SQLiteStore):
    """A store whose pages after the first fail, as a store gone mid-export would."""

    pages = 0

    def event_pieces(
        self, query: EventQuery, *, meta: bool = False, lines: bool = False
    ) -> Generator[bytes, None, EventQuery | None]:
        self.pages += 1
        if self.pages > 1:
            raise StorageError("gone")
        return super().event_pieces(query, meta=meta, lines=lines)


def test_an_export_that_fails_midway_is_broken_off(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once an export has begun its status cannot change: a page that fails then ends the
    connection without the end of the chunked body, so the client knows it is incomplete
    (never a complete answer that is silently shorter)."""
    monkeypatch.setattr("trackline.collector.reading.MAX_EVENTS_LIMIT", 7)
    store = _FailingLater(db_path)
    try:
        with serve(store) as running:
            http = Http(running.url)
            post(http, range(20))
            response = http.pool.request(
                "GET", running.url + "/api/events?format=ndjson", preload_content=False
            )
            assert response.status == 200
            with pytest.raises(urllib3.exceptions.ProtocolError):
                for _ in response.stream(1024):
                    pass
    finally:
        store.close()
    assert "an export was broken off" in caplog.text
