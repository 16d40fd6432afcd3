"""The collector's HTTP API, over real HTTP on 127.0.0.1 against a real SQLite file."""

from __future__ import annotations

import base64
import gzip
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.collector.conftest import Http, basic, message, source_of, spec
from trackline.collector import RunningCollector, serve
from trackline.collector.access import is_loopback


def batch(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"batch": list(messages), **fields}


def test_valid_batch_is_accepted_and_stored(http: Http) -> None:
    """spec/valid-batch.json: 200, every message accepted, each stored with receivedAt."""
    document = spec("valid-batch.json")
    answer = http.post("/v1/batch", document)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json == {"accepted": len(document["batch"]), "duplicates": 0, "rejected": []}
    stored = http.events()
    assert {event["messageId"] for event in stored} == {m["messageId"] for m in document["batch"]}
    assert all(event["receivedAt"].endswith("Z") for event in stored)


def test_import_is_an_alias_of_batch(http: Http) -> None:
    """The .NET library posts to /v1/import."""
    assert http.post("/v1/import", batch(message(1))).json["accepted"] == 1


@pytest.mark.parametrize("name", list(spec("valid-messages.json")))
def test_single_message_routes(http: Http, name: str) -> None:
    """Each spec example posted alone to /v1/<type> is stored, writeKey in the body."""
    example = spec("valid-messages.json")[name]
    body = {**example, "writeKey": "body-key"}
    answer = http.post(f"/v1/{example['type']}", body, key=None)
    assert answer.json == {"accepted": 1, "duplicates": 0, "rejected": []}
    stored = http.get(f"/api/events/{example['messageId']}").json
    assert stored["type"] == example["type"]
    assert "writeKey" not in stored


def test_invalid_messages_are_rejected_one_by_one(http: Http) -> None:
    """Every case of spec/invalid-messages.json, interleaved with valid messages in one
    batch: each is rejected with its index, every valid one is stored."""
    cases = spec("invalid-messages.json")
    messages: list[dict[str, Any]] = []
    for n, case in enumerate(cases):
        messages += [message(n), case["message"]]
    answer = http.post("/v1/batch", batch(*messages))
    assert answer.status == 200
    assert answer.json["accepted"] == len(cases)
    rejected = answer.json["rejected"]
    assert [r["index"] for r in rejected] == list(range(1, 2 * len(cases), 2))
    assert all(r["code"] and r["message"] for r in rejected)
    assert {e["messageId"] for e in http.events()} == {f"message-{n}" for n in range(len(cases))}
    assert http.get("/api/stats").json["rejected"] == len(cases)


@pytest.mark.parametrize(
    "case", spec("invalid-requests.json"), ids=lambda case: case["why"].replace(" ", "-")
)
def test_invalid_requests(http: Http, case: dict[str, Any]) -> None:
    """Every case of spec/invalid-requests.json gets its status and a JSON {code, message},
    and stores nothing."""
    key: str | None = "key"
    body = case["body"].encode()
    if case["body"] == "<2501 valid messages>":
        body = orjson.dumps(batch(*(message(n) for n in range(2501))))
    elif case["body"] == "<600 KB>":
        body = orjson.dumps(batch(message(properties={"pad": "x" * 600_000})))
    elif case["body"].startswith("<valid batch, no Authorization"):
        body, key = orjson.dumps(spec("valid-batch.json")), None
    answer = http.post("/v1/batch", raw=body, key=key)
    assert answer.status == case["status"]
    assert set(answer.json) == {"code", "message"}
    assert http.get("/api/stats").json["events"] == 0


def test_gzip_bodies(http: Http) -> None:
    """Content-Encoding: gzip bodies are inflated and stored."""
    assert http.post("/v1/batch", batch(message(1)), gzip=True).json["accepted"] == 1


def test_gzip_body_over_the_limit_after_inflation_is_413(http: Http) -> None:
    """A 600 KB body compressed far under the limit is still 413: the limit is inflated size."""
    body = orjson.dumps(batch(message(properties={"pad": "x" * 600_000})))
    answer = http.post("/v1/batch", raw=body, gzip=True)
    assert (answer.status, answer.json["code"]) == (413, "body_too_large")


def test_gzip_bomb_is_413(http: Http) -> None:
    """A 1 GB-of-zeros bomb (about 1 MB compressed) is refused with 413 and the collector
    stays up."""
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=1)
    answer = http.post("/v1/batch", raw=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status == 413
    assert http.get("/healthz").status == 200


def test_corrupt_gzip_is_400(http: Http) -> None:
    """A body that claims gzip but is not is refused with invalid_gzip."""
    answer = http.post("/v1/batch", raw=b'{"batch": []}', headers={"Content-Encoding": "gzip"})
    assert (answer.status, answer.json["code"]) == (400, "invalid_gzip")


def test_unsupported_encoding_is_415(http: Http) -> None:
    """Encodings other than gzip are refused, not guessed at."""
    answer = http.post("/v1/batch", batch(), headers={"Content-Encoding": "br"})
    assert (answer.status, answer.json["code"]) == (415, "unsupported_encoding")


@pytest.mark.parametrize("colon", [True, False], ids=["key-colon", "key-no-colon"])
def test_basic_auth_with_or_without_colon(
    http: Http, collector: RunningCollector, colon: bool
) -> None:
    """The write key as Basic user name works with and without the trailing colon, and its
    key id is recorded as the events' source."""
    answer = http.post("/v1/batch", batch(message()), headers={"Authorization": basic("k1", colon)})
    assert answer.json["accepted"] == 1
    assert http.get("/api/stats").json["by_source"] == {source_of(collector, "k1"): 1}


def test_write_key_in_the_body(http: Http, collector: RunningCollector) -> None:
    """writeKey in the batch body authenticates like the header."""
    answer = http.post("/v1/batch", batch(message(), writeKey="body-key"), key=None)
    assert answer.json["accepted"] == 1
    assert http.get("/api/stats").json["by_source"] == {source_of(collector, "body-key"): 1}


def test_malformed_basic_header_is_400(http: Http) -> None:
    """Basic credentials that are not base64 are refused as a malformed key, at once."""
    answer = http.post("/v1/batch", batch(message()), headers={"Authorization": "Basic %%%"})
    assert (answer.status, answer.json["code"]) == (400, "invalid_write_key")


def test_configured_keys_are_the_only_ones_accepted(db_path: Path) -> None:
    """With write keys configured, any other key (header or body) is 401 and nothing is stored."""
    with serve(db_path, write_keys=["good", "also-good"]) as running:
        http = Http(running.url)
        assert http.post("/v1/batch", batch(message(1)), key="good").status == 200
        assert (
            http.post("/v1/batch", batch(message(2), writeKey="also-good"), key=None).status == 200
        )
        assert http.post("/v1/batch", batch(message(3)), key="bad").status == 401
        assert http.post("/v1/batch", batch(message(4), writeKey="bad"), key=None).status == 401
        assert http.post("/v1/batch", batch(message(5)), key="").status == 401
        assert http.get("/api/stats").json["events"] == 2


def test_duplicates_are_counted_not_stored(http: Http) -> None:
    """A retried batch stores nothing new and says how many it had already."""
    first = http.post("/v1/batch", batch(message(1), message(2)))
    again = http.post("/v1/batch", batch(message(2), message(3), message(3)))
    assert first.json["accepted"] == 2
    assert again.json == {"accepted": 1, "duplicates": 2, "rejected": []}
    stats = http.get("/api/stats").json
    assert (stats["events"], stats["duplicates"]) == (3, 2)


def test_enrichment_over_http(http: Http) -> None:
    """Stored messages carry receivedAt, originalTimestamp and a skew-corrected timestamp,
    and the batch context merged in."""
    sent = batch(
        message(1, timestamp="2000-01-01T00:00:00.000Z"),
        sentAt="2000-01-01T00:00:10.000Z",
        context={"ip": "1.2.3.4"},
    )
    http.post("/v1/batch", sent)
    (event,) = http.events()
    assert event["originalTimestamp"] == "2000-01-01T00:00:00.000Z"
    assert event["context"] == {"ip": "1.2.3.4"}
    received = event["receivedAt"]
    assert received > "2026"
    # The client's clock was 10 s "after" its event: the event happened 10 s before receipt.
    from trackline.collector.ingest import parse_timestamp

    gap = parse_timestamp(received) - parse_timestamp(event["timestamp"])  # type: ignore[operator]
    assert gap.total_seconds() == pytest.approx(10.0, abs=0.002)


def test_storage_down_is_503_with_retry_after_and_recovers(
    http: Http, collector: RunningCollector
) -> None:
    """While another connection holds the write lock the answer is 503 with Retry-After and
    nothing of the request is stored; once it lets go the same request succeeds."""
    other = sqlite3.connect(collector.storage.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        answer = http.post("/v1/batch", batch(message(1), message(2)))
        assert (answer.status, answer.json["code"]) == (503, "storage_unavailable")
        assert int(answer.headers["Retry-After"]) > 0
        assert http.get("/healthz").status == 503
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert http.events() == []
    assert http.post("/v1/batch", batch(message(1), message(2))).json["accepted"] == 2
    assert http.get("/healthz").json == {"status": "ok"}


def test_read_api_filters(http: Http) -> None:
    """/api/events filters by type, user, anonymous id, event, text and time; newest first."""
    http.post("/v1/batch", batch(message(1), message(2, event="Signed Up")))
    http.post("/v1/batch", batch({"type": "identify", "anonymousId": "a-1", "traits": {"x": 1}}))

    def types(query: str) -> list[str]:
        return [event.get("event", event["type"]) for event in http.events(query)]

    assert types("") == ["identify", "Signed Up", "Item Purchased"]
    assert types("?limit=1") == ["identify"]
    assert types("?type=track") == ["Signed Up", "Item Purchased"]
    assert types("?user_id=user-1") == ["Item Purchased"]
    assert types("?anonymous_id=a-1") == ["identify"]
    assert types("?event=Signed%20Up") == ["Signed Up"]
    assert types("?q=signed") == ["Signed Up"]
    assert types("?since=2999-01-01T00:00:00Z") == []
    assert types("?since=2000-01-01") == ["identify", "Signed Up", "Item Purchased"]


@pytest.mark.parametrize(
    "query", ["?limit=0", "?limit=x", "?limit=10001", "?since=later", "?type=purchase"]
)
def test_read_api_refuses_bad_parameters(http: Http, query: str) -> None:
    """A bad filter is a 400 naming it, never a silent empty list."""
    answer = http.get(f"/api/events{query}")
    assert (answer.status, answer.json["code"]) == (400, "invalid_parameter")


def test_one_event_and_not_found(http: Http) -> None:
    """/api/events/{messageId} returns the stored message, or a JSON 404."""
    http.post("/v1/batch", batch(message(1, messageId="id/with/slashes")))
    assert http.get("/api/events/id/with/slashes").json["userId"] == "user-1"
    missing = http.get("/api/events/nope")
    assert (missing.status, missing.json["code"]) == (404, "not_found")


def test_stats_shape(http: Http, collector: RunningCollector) -> None:
    """/api/stats has exactly the documented keys."""
    http.post("/v1/batch", batch(message(1), {"type": "page", "userId": "u", "name": "Home"}))
    assert http.get("/api/stats").json == {
        "events": 2,
        "by_type": {"track": 1, "page": 1},
        "by_source": {source_of(collector, "key"): 2},
        "duplicates": 0,
        "rejected": 0,
        "unroutable": 0,
    }


def test_delete_clears_from_loopback(http: Http) -> None:
    """DELETE /api/events from 127.0.0.1 empties the store."""
    http.post("/v1/batch", batch(message(1), message(2)))
    assert http.request("DELETE", "/api/events").json == {"deleted": 2}
    assert http.events() == []


def test_delete_is_only_for_loopback_clients() -> None:
    """The check behind DELETE: loopback addresses pass, anything else does not."""
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.8.9.10")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert is_loopback("[::1]")
    assert not is_loopback("localhost")  # a name a header can claim, not an address
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("::ffff:10.0.0.1")
    assert not is_loopback("example.com")
    assert not is_loopback(None)


def test_delete_from_another_address_is_403(db_path: Path) -> None:
    """A client that is not on loopback (here, as named by the trusted proxy on 127.0.0.1)
    is refused with 403 and nothing is deleted."""
    with serve(db_path, trusted_proxies=["127.0.0.1"]) as running:
        http = Http(running.url)
        http.post("/v1/batch", batch(message(1)))
        answer = http.request("DELETE", "/api/events", headers={"X-Forwarded-For": "10.1.2.3"})
        assert (answer.status, answer.json["code"]) == (403, "forbidden")
        local = {"X-Forwarded-For": "127.0.0.1"}
        assert len(http.request("GET", "/api/events", headers=local).json["events"]) == 1


def test_unknown_routes_and_methods_answer_json(http: Http) -> None:
    """404 and 405 are JSON errors like every other."""
    missing = http.get("/v1/nothing")
    assert (missing.status, missing.json["code"]) == (404, "not_found")
    wrong = http.get("/v1/batch")
    assert (wrong.status, wrong.json["code"]) == (405, "method_not_allowed")


def test_empty_batch_is_fine(http: Http) -> None:
    """An empty batch is a valid request that stores nothing."""
    assert http.post("/v1/batch", batch()).json == {"accepted": 0, "duplicates": 0, "rejected": []}


def test_live_stream_pushes_new_events(collector: RunningCollector, http: Http) -> None:
    """GET /api/stream is server-sent events: each newly stored message arrives as `data:`
    with its row id, and only new ones (not duplicates)."""
    stream = http.pool.request(
        "GET", collector.url + "/api/stream", preload_content=False, timeout=5.0
    )
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    http.post("/v1/batch", batch(message(1), message(2)))
    http.post("/v1/batch", batch(message(2), message(3)))
    text = b""
    for chunk in stream.stream(256, decode_content=False):
        text += chunk
        if text.count(b"data: ") >= 3:
            break
    stream.release_conn()
    stream.close()
    frames = [f for f in text.decode().split("\n\n") if f.startswith("id:")]
    ids = [orjson.loads(f.split("data: ", 1)[1])["messageId"] for f in frames]
    assert ids == ["message-1", "message-2", "message-3"]


def test_healthz(http: Http) -> None:
    """/healthz is 200 while the store takes writes."""
    assert http.get("/healthz").json == {"status": "ok"}


def test_write_key_body_field_must_be_a_string(http: Http) -> None:
    """A non-string writeKey is no key at all."""
    answer = http.post("/v1/batch", batch(message(), writeKey=42), key=None)
    assert answer.status == 401


def test_basic_auth_base64_of_key_without_password(http: Http) -> None:
    """The exact header analytics-python and the .NET library send."""
    header = "Basic " + base64.b64encode(b"abc:").decode()
    assert http.post("/v1/batch", batch(message()), headers={"Authorization": header}).status == 200
