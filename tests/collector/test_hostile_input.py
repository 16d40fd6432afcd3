"""Hostile and random input: whatever arrives, the collector answers with a decision (2xx or
4xx), never a crash, and a bad message never costs the rest of its batch."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.collector.conftest import Http, message
from trackline.collector import serve
from trackline.collector.ingest import BodyReader, RequestRejected, parse_batch, process

RECEIVED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "type",
        "userId",
        "anonymousId",
        "event",
        "messageId",
        "timestamp",
        "sentAt",
        "properties",
        "traits",
        "context",
        "integrations",
        "groupId",
        "previousId",
        "name",
        "category",
    ]
)
messages = st.one_of(
    json_values,
    st.dictionaries(fields, json_values, max_size=8),
    st.builds(
        lambda extra: {**message(), **extra}, st.dictionaries(fields, json_values, max_size=3)
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=6))
def test_any_batch_is_decided_message_by_message(batch: list[Any]) -> None:
    """Every message is either stored or rejected with a code; nothing raises."""
    body = orjson.dumps({"batch": batch})
    processed = process(parse_batch(body), source="k", received_at=RECEIVED)
    assert len(processed.rows) + len(processed.rejections) == len(batch)
    assert all(rejection.code for rejection in processed.rejections)
    for row in processed.rows:
        assert orjson.loads(row.body)["receivedAt"] == "2026-11-28T15:00:00.000Z"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_400(body: bytes) -> None:
    """Arbitrary bytes decode to a batch or are refused with RequestRejected, nothing else."""
    try:
        envelope = parse_batch(body)
    except RequestRejected as exc:
        status = exc.status
    else:
        process(envelope, source="k", received_at=RECEIVED)
        status = 200
    assert status in (200, 400)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_any_gzip_bytes_inflate_or_are_refused(body: bytes, step: int) -> None:
    """Random bytes declared as gzip, in any chunking, inflate or are refused with 400/413."""
    reader = BodyReader(gzip=True, limit=1000)
    status = 200
    try:
        for start in range(0, len(body), step):
            reader.feed(body[start : start + step])
        reader.finish()
    except RequestRejected as exc:
        status = exc.status
    assert status in (200, 400, 413)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=200), gzipped=st.booleans())
def test_random_bodies_over_http_never_5xx(http: Http, body: bytes, gzipped: bool) -> None:
    """Over HTTP, random bodies (plain or gzip) get 200 or 4xx, never a 5xx."""
    if gzipped:
        body = gzip.compress(body)
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    answer = http.post("/v1/batch", raw=body, headers=headers)
    assert answer.status < 500
    assert set(answer.json) in ({"code", "message"}, {"accepted", "duplicates", "rejected"})


def test_overloaded_writer_sheds_with_503(http: Http, monkeypatch: pytest.MonkeyPatch) -> None:
    """When too many rows wait for the writer, new requests get 503 overloaded with
    Retry-After instead of queueing without bound."""
    monkeypatch.setattr("trackline.collector.app.MAX_PENDING_ROWS", -1)
    answer = http.post("/v1/batch", {"batch": [message(1)]})
    assert (answer.status, answer.json["code"]) == (503, "overloaded")
    assert "Retry-After" in answer.headers


def test_too_many_requests_in_flight_are_shed_with_503(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the number of ingest requests handled at once, a request is answered 503
    overloaded at once (its body unread), and the connection stays usable."""
    monkeypatch.setattr("trackline.collector.limits.INGEST_REQUESTS", 0)
    with serve(db_path) as running:
        http = Http(running.url)
        body = {"batch": [message(1, properties={"pad": "x" * 100_000})]}
        answer = http.post("/v1/batch", body)
        assert (answer.status, answer.json["code"]) == (503, "overloaded")
        assert http.get("/healthz").status == 200
