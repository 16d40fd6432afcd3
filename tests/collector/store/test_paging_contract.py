"""Walking a store page by page (`Store.event_pieces` and the query it returns), for every
engine: newest first and oldest first, with filters, with the windows of `q` and `source`,
as NDJSON, and while events keep arriving. Runs once per engine in `ENGINES`."""

from __future__ import annotations

import threading

import orjson
import pytest

from tests.collector.store.conftest import rows
from tests.support.pages import page, walk
from trackline.collector.store import EventQuery, Store


def names(*numbers: int) -> list[str]:
    return [f"message-{n}" for n in numbers]


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> int:
    """`q` and `source` scan windows of 40 events (instead of 50,000) in every engine."""
    monkeypatch.setattr("trackline.collector.store.sqlite.MAX_SCAN_ROWS", 40)
    monkeypatch.setattr("trackline.collector.store.postgres.reads.MAX_SCAN_ROWS", 40)
    return 40


def test_a_walk_newest_first_sees_every_event_once(store: Store) -> None:
    """Pages of `limit`, newest first, each continuing below the last; the last page says
    there is no next one (also when it is exactly full)."""
    for start in range(0, 250, 50):
        store.write(rows(*range(start, start + 50)))
    pages = list(walk(store, EventQuery(limit=50)))
    assert [len(p) for p in pages] == [50] * 5
    assert [m for p in pages for m in p] == names(*range(249, -1, -1))
    assert [len(p) for p in walk(store, EventQuery(limit=60))] == [60, 60, 60, 60, 10]


def test_a_walk_oldest_first_ends_at_the_newest_event_of_its_start(store: Store) -> None:
    """Oldest first, a walk fixes its end at its first page: events stored during the walk
    are not in it, so an export ends however fast events arrive."""
    store.write(rows(*range(100)))
    first, following = page(store, EventQuery(limit=30, ascending=True))
    assert [m["messageId"] for m in orjson.loads(first)] == names(*range(30))
    store.write(rows(*range(100, 150)))
    rest = [m for p in walk(store, following) for m in p] if following else []
    assert rest == names(*range(30, 100))


def test_an_empty_store_is_one_empty_page(store: Store) -> None:
    for ascending in (False, True):
        assert page(store, EventQuery(ascending=ascending)) == (b"[]", None)


def test_filters_hold_on_every_page(store: Store) -> None:
    """Indexed filters (here `user_id`, `type`) apply to each page; the walk ends with the
    last match, not the store."""
    store.write(rows(*range(0, 100, 2), user="even"))
    store.write(rows(*range(1, 100, 2), user="odd"))
    store.write(rows(100, 101, type="track", user="odd"))
    pages = list(walk(store, EventQuery(user_id="even", limit=20)))
    assert [m for p in pages for m in p] == names(*range(98, -1, -2))
    assert [len(p) for p in pages] == [20, 20, 10]
    oldest_first = walk(store, EventQuery(user_id="odd", limit=20, ascending=True))
    assert [m for p in oldest_first for m in p] == names(*range(1, 100, 2), 100, 101)


def test_a_window_without_a_match_still_gives_the_next_page(store: Store, windows: int) -> None:
    """`q` scans a window of `MAX_SCAN_ROWS` events per page: a page that found nothing in
    its window is not the end, it names the page after the window; the walk reaches every
    match however far apart, and ends at the bottom (or, oldest first, at its top)."""
    store.write(rows(*range(200), properties={"colour": "grey"}))
    store.write(rows(200, properties={"colour": "teal"}))
    store.write(rows(*range(201, 400), properties={"colour": "grey"}))
    store.write(rows(400, properties={"colour": "teal"}))
    newest_first = list(walk(store, EventQuery(q="teal", limit=10)))
    assert [m for p in newest_first for m in p] == names(400, 200)
    assert [] in newest_first  # windows that found nothing, and the walk went on
    assert len(newest_first) == pytest.approx(401 / windows, abs=1)
    oldest_first = list(walk(store, EventQuery(q="TEAL", limit=10, ascending=True)))
    assert [m for p in oldest_first for m in p] == names(200, 400)
    full = list(walk(store, EventQuery(q="grey", limit=25)))
    assert [m for p in full for m in p] == names(*range(399, 200, -1), *range(199, -1, -1))


def test_a_source_filter_walks_window_by_window(store: Store, windows: int) -> None:
    store.write(rows(*range(120)))
    key = orjson.loads(store.events(EventQuery(limit=1), meta=True))[0]["source"]
    found = [m for p in walk(store, EventQuery(source=key, limit=1000)) for m in p]
    assert found == names(*range(119, -1, -1))
    assert list(walk(store, EventQuery(source="nobody", limit=1000))) == [[], [], []]


def test_pages_as_ndjson(store: Store) -> None:
    """With `lines`, each event is one line, no brackets or commas; meta items too."""
    store.write(rows(*range(5)))
    body, following = page(store, EventQuery(limit=3), lines=True)
    assert body.endswith(b"\n")
    assert body.count(b"\n") == 3
    assert [orjson.loads(line)["messageId"] for line in body.splitlines()] == names(4, 3, 2)
    assert following is not None
    rest, end = page(store, following, lines=True)
    assert [orjson.loads(line)["messageId"] for line in rest.splitlines()] == names(1, 0)
    assert end is None
    meta = b"".join(store.event_pieces(EventQuery(limit=1), meta=True, lines=True))
    assert orjson.loads(meta)["message"]["messageId"] == "message-4"


@pytest.mark.parametrize("ascending", [False, True])
def test_a_walk_while_events_arrive_sees_each_earlier_event_once(
    store: Store, ascending: bool
) -> None:
    """A writer keeps storing events while a walk pages through (from its second page on):
    every event stored before the walk began is seen exactly once, and none stored after."""
    store.write(rows(*range(3000)))
    stop = threading.Event()
    wrote = threading.Event()
    written = [3000]

    def keep_writing() -> None:
        while not stop.is_set():
            start = written[0]
            store.write(rows(*range(start, start + 50)))
            written[0] = start + 50
            wrote.set()

    first, following = page(store, EventQuery(limit=97, ascending=ascending))
    seen = [m["messageId"] for m in orjson.loads(first)]
    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert following is not None
        for ids in walk(store, following):
            seen += ids
            assert wrote.wait(10)  # each page after a write during the walk, at least one
    finally:
        stop.set()
        writer.join()
    assert written[0] > 3000
    assert len(seen) == len(set(seen))
    assert set(seen) == set(names(*range(3000)))
