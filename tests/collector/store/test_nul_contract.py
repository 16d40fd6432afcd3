"""A NUL (U+0000) over HTTP, from a collector on every engine: in an indexed field it rejects
its message alone, anywhere else in a message it is stored and read back as sent, and in a
read's filter or path it is a 400 naming the parameter. PostgreSQL's text cannot hold a NUL
where SQLite's can; the answers are the same. Runs once per engine in `ENGINES`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.collector.conftest import Http, message
from tests.collector.store.conftest import Engine
from trackline.collector import serve

NO_NUL = "must not contain the NUL character (U+0000)"
#: The message fields kept in indexed columns as well as in the stored JSON.
INDEXED = ("messageId", "userId", "anonymousId", "event", "name")


@pytest.fixture
def served(engine: Engine) -> Iterator[Http]:
    """A client of a collector serving a store of `engine`."""
    with serve(engine.open()) as running:
        client = Http(running.url)
        yield client
        client.pool.clear()


def poisoned(field: str, n: int) -> dict[str, Any]:
    """Message `message-n` (a page for `name`, else a track) with a NUL in `field`."""
    if field == "name":
        return {"type": "page", "anonymousId": "a", "messageId": f"message-{n}", "name": "Ho\x00me"}
    return message(n, **{field: f"{field}\x00{n}"})


def ids(http: Http, query: str = "") -> list[str]:
    return [event["messageId"] for event in http.events(f"?limit=1000{query}")]


def test_a_nul_in_an_indexed_field_rejects_its_message_alone(served: Http) -> None:
    """For each indexed field, a batch of five whose third message has a NUL in it: 200, that
    message rejected by index with `invalid_field` naming the field, the other four stored."""
    stored: list[str] = []
    for round_, field in enumerate(INDEXED):
        numbers = range(10 * round_, 10 * round_ + 5)
        batch = [message(n) for n in numbers]
        batch[2] = poisoned(field, numbers[2])
        answer = served.post("/v1/batch", {"batch": batch})
        rejection = {"index": 2, "code": "invalid_field", "message": f"{field} {NO_NUL}"}
        assert (answer.status, answer.json) == (
            200,
            {"accepted": 4, "duplicates": 0, "rejected": [rejection]},
        ), field
        stored += [f"message-{n}" for n in numbers if n != numbers[2]]
    assert ids(served, "&order=asc") == stored
    assert served.get("/api/stats").json["rejected"] == len(INDEXED)


def test_a_nul_elsewhere_in_a_message_is_stored_and_read_back(served: Http) -> None:
    """A NUL in properties, traits, context or a key is stored and read back exactly, as
    are indexed fields with backslashes or the six characters `\\u0000`, which hold no NUL."""
    properties = {"note": "a\x00b", "k\x00ey": ["\x00", {"deep": "\x00\x00"}]}
    traits = {"name": "Ada\x00"}
    page = {"title": "\x00title", "url": "https://example.com/?q=\x00"}
    unescaped = "back\\slash\\u0000"
    batch = [
        message(1, properties=properties, context={"page": page}),
        {"type": "identify", "userId": "user-2", "messageId": "message-2", "traits": traits},
        message(3, userId=unescaped, event=unescaped),
    ]
    answer = served.post("/v1/batch", {"batch": batch})
    assert (answer.status, answer.json) == (200, {"accepted": 3, "duplicates": 0, "rejected": []})
    first = served.get("/api/events/message-1").json
    assert (first["properties"], first["context"]["page"]) == (properties, page)
    assert served.get("/api/events/message-2").json["traits"] == traits
    [listed] = served.events("?user_id=user-1")
    assert (listed["properties"], listed["context"]["page"]) == (properties, page)
    assert ids(served, "&user_id=back%5Cslash%5Cu0000&event=back%5Cslash%5Cu0000") == ["message-3"]


def test_a_nul_in_a_read_is_a_400_naming_the_parameter(served: Http) -> None:
    """A NUL in a text filter of `/api/events` (pages or export), or in the messageId of an
    event's path, is answered 400 naming it; the store is not asked and reads on."""
    assert served.post("/v1/batch", {"batch": [message(1)]}).status == 200
    for name in ("user_id", "anonymous_id", "event", "source", "q"):
        for extra in ("", "&format=ndjson"):
            answer = served.get(f"/api/events?{name}=user-1%00{extra}")
            expected = {"code": "invalid_parameter", "message": f"{name} {NO_NUL}"}
            assert (answer.status, answer.json) == (400, expected), (name, extra)
    for path in ("/api/events/message-1%00", "/api/events/message-1%00/deliveries"):
        answer = served.get(path)
        expected = {"code": "invalid_parameter", "message": f"messageId {NO_NUL}"}
        assert (answer.status, answer.json) == (400, expected), path
    assert ids(served, "&user_id=user-1") == ["message-1"]
    assert served.get("/api/events/message-1").status == 200
    assert served.get("/api/events/message-1/deliveries").status == 200
