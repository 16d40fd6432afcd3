"""Decoding, limits, validation and enrichment of requests, without a server."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from tests.collector.conftest import message, spec
from trackline.collector.ingest import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    BodyReader,
    Envelope,
    Rejection,
    RequestRejected,
    format_timestamp,
    is_gzip,
    parse_batch,
    parse_single,
    parse_timestamp,
    process,
)

RECEIVED = datetime(2026, 11, 28, 15, 0, 0, 123456, tzinfo=UTC)


def stored(envelope: Envelope) -> list[dict[str, Any]]:
    processed = process(envelope, source="key", received_at=RECEIVED)
    assert processed.rejections == []
    return [orjson.loads(row.body) for row in processed.rows]


def read(chunks: list[bytes], *, gzipped: bool, limit: int = MAX_REQUEST_BYTES) -> bytes:
    reader = BodyReader(gzip=gzipped, limit=limit)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


def test_plain_body_passes_through_in_chunks() -> None:
    """A plain body is returned as received, whatever the chunking."""
    assert read([b"ab", b"", b"cd"], gzipped=False) == b"abcd"


def test_plain_body_over_the_limit_is_413() -> None:
    """The limit is checked per chunk: the chunk that passes it raises 413."""
    reader = BodyReader(gzip=False, limit=10)
    reader.feed(b"x" * 10)
    with pytest.raises(RequestRejected) as caught:
        reader.feed(b"x")
    assert (caught.value.status, caught.value.code) == (413, "body_too_large")


def test_gzip_body_is_inflated_across_chunks() -> None:
    """gzip split at any byte inflates to the original."""
    original = orjson.dumps({"batch": [message(n) for n in range(50)]})
    packed = gzip.compress(original)
    assert read([packed[i : i + 7] for i in range(0, len(packed), 7)], gzipped=True) == original


def test_concatenated_gzip_members_are_one_body() -> None:
    """Two gzip members back to back (valid gzip) inflate to both parts."""
    assert read([gzip.compress(b"ab") + gzip.compress(b"cd")], gzipped=True) == b"abcd"


def test_gzip_bomb_is_cut_off_at_the_limit() -> None:
    """A bomb (zeros, about 1000:1) stops with 413 after at most limit + 1 inflated bytes."""
    bomb = gzip.compress(b"\0" * (MAX_REQUEST_BYTES * 20))
    assert len(bomb) < MAX_REQUEST_BYTES / 50
    reader = BodyReader(gzip=True)
    with pytest.raises(RequestRejected) as caught:
        reader.feed(bomb)
    assert caught.value.status == 413
    assert reader._size <= MAX_REQUEST_BYTES + 1


def test_compressed_bytes_are_capped_too() -> None:
    """Compressed input is capped at the limit even when it inflates to almost nothing."""
    stream = zlib.compressobj(wbits=31)
    flushed = b"".join(stream.compress(b"x") + stream.flush(zlib.Z_FULL_FLUSH) for _ in range(2000))
    assert len(flushed) > 5000
    reader = BodyReader(gzip=True, limit=5000)
    with pytest.raises(RequestRejected) as caught:
        reader.feed(flushed)
    assert caught.value.status == 413
    assert reader._size < 5000


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b"{}")[:-6]],
    ids=["corrupt", "truncated"],
)
def test_corrupt_or_truncated_gzip_is_400(body: bytes) -> None:
    """A body that is not gzip, or stops in the middle, is refused with 400 invalid_gzip."""
    with pytest.raises(RequestRejected) as caught:
        read([body], gzipped=True)
    assert (caught.value.status, caught.value.code) == (400, "invalid_gzip")


def test_content_encodings() -> None:
    """gzip and identity are read; anything else is 415."""
    assert is_gzip("gzip")
    assert is_gzip("x-gzip")
    assert is_gzip(" GZIP ")
    assert not is_gzip(None)
    assert not is_gzip("identity")
    with pytest.raises(RequestRejected) as caught:
        is_gzip("br")
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"batch": 5}', "batch_not_a_list"),
        (b"{}", "batch_not_a_list"),
        (b'{"batch": [], "sentAt": "soon"}', "invalid_timestamp"),
        (b'{"batch": [], "context": "web"}', "invalid_field"),
        (b'{"batch": [], "x": NaN}', "invalid_json"),
        (b'{"batch": []}\xff', "invalid_json"),
    ],
)
def test_bad_envelopes_are_400(body: bytes, code: str) -> None:
    """Each malformed envelope is refused whole with 400 and a code naming the problem."""
    with pytest.raises(RequestRejected) as caught:
        parse_batch(body)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_more_than_2500_messages_is_400() -> None:
    """2500 messages is a batch; 2501 is refused whole."""
    assert len(parse_batch(orjson.dumps({"batch": [{}] * 2500})).messages) == 2500
    with pytest.raises(RequestRejected) as caught:
        parse_batch(orjson.dumps({"batch": [{}] * 2501}))
    assert caught.value.code == "too_many_messages"


def test_valid_batch_is_fully_accepted() -> None:
    """Every message of spec/valid-batch.json is stored."""
    envelope = parse_batch(orjson.dumps(spec("valid-batch.json")))
    assert len(stored(envelope)) == len(spec("valid-batch.json")["batch"])


@pytest.mark.parametrize("case", spec("invalid-messages.json"), ids=lambda case: case["why"])
def test_each_invalid_message_is_rejected_alone(case: dict[str, Any]) -> None:
    """An invalid message between two valid ones is rejected; both neighbours are stored."""
    batch = [message(1), case["message"], message(2)]
    processed = process(Envelope(batch), source="key", received_at=RECEIVED)
    assert [row.message_id for row in processed.rows] == ["message-1", "message-2"]
    assert [rejection.index for rejection in processed.rejections] == [1]
    assert processed.rejections[0].code


def test_rejection_codes_name_the_rule() -> None:
    """Codes are stable names a client can act on."""
    cases = {
        "no_user_anon_id": {"type": "track", "event": "E"},
        "missing_event": {"type": "track", "userId": "u"},
        "missing_group_id": {"type": "group", "userId": "u"},
        "missing_previous_id": {"type": "alias", "userId": "u"},
        "missing_user_id": {"type": "alias", "previousId": "p"},
        "invalid_type": {"type": "purchase", "userId": "u"},
        "invalid_message_id": message(messageId="x" * 100),
        "invalid_timestamp": message(timestamp="yesterday"),
        "invalid_field": message(properties=["a"]),
        "not_an_object": "track",
        "message_too_large": message(properties={"pad": "x" * MAX_MESSAGE_BYTES}),
    }
    processed = process(Envelope(list(cases.values())), source="key", received_at=RECEIVED)
    assert [rejection.code for rejection in processed.rejections] == list(cases)


def test_message_size_limit_counts_the_message_as_sent() -> None:
    """A message of exactly 32 KB is stored although enrichment makes its stored form larger."""
    base = message(properties={"pad": ""})
    pad = MAX_MESSAGE_BYTES - len(orjson.dumps(base))
    exact = message(properties={"pad": "x" * pad})
    assert len(orjson.dumps(exact)) == MAX_MESSAGE_BYTES
    processed = process(Envelope([exact]), source="key", received_at=RECEIVED)
    assert processed.rejections == []
    assert len(processed.rows[0].body) > MAX_MESSAGE_BYTES


def test_message_id_of_99_characters_is_accepted() -> None:
    """The limit is "under 100 characters"."""
    assert stored(Envelope([message(messageId="x" * 99)]))[0]["messageId"] == "x" * 99


def test_missing_message_id_is_assigned() -> None:
    """A message without messageId gets a fresh one, different for each message."""
    rows = stored(Envelope([message(messageId=None), message(messageId=None)]))
    assert rows[0]["messageId"]
    assert rows[0]["messageId"] != rows[1]["messageId"]


def test_skew_is_corrected_with_sent_at() -> None:
    """timestamp = receivedAt - (sentAt - originalTimestamp); the client's value is kept."""
    envelope = Envelope(
        [message(timestamp="2026-11-28T13:59:58.000Z")],
        sent_at=datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC),
    )
    (body,) = stored(envelope)
    assert body["originalTimestamp"] == "2026-11-28T13:59:58.000Z"
    assert body["sentAt"] == "2026-11-28T14:00:00.000Z"
    assert body["receivedAt"] == "2026-11-28T15:00:00.123Z"
    assert body["timestamp"] == "2026-11-28T14:59:58.123Z"


def test_message_sent_at_overrides_the_batch() -> None:
    """A message's own sentAt (single-message routes carry it) is the one used for skew."""
    envelope = Envelope(
        [message(timestamp="2026-11-28T14:00:00Z", sentAt="2026-11-28T14:00:10Z")],
        sent_at=datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC),
    )
    assert stored(envelope)[0]["timestamp"] == "2026-11-28T14:59:50.123Z"


def test_without_sent_at_timestamp_is_kept_and_without_timestamp_it_is_received_at() -> None:
    """No sentAt: no correction possible. No timestamp: the event happened when received."""
    with_ts, without_ts = stored(
        Envelope([message(1, timestamp="2026-11-28T10:00:00+02:00"), message(2, timestamp=None)])
    )
    assert with_ts["timestamp"] == "2026-11-28T08:00:00.000Z"
    assert without_ts["timestamp"] == without_ts["receivedAt"] == "2026-11-28T15:00:00.123Z"
    assert "originalTimestamp" not in without_ts


def test_batch_context_and_integrations_are_merged_message_first() -> None:
    """Batch-level context/integrations fill in; a message's own keys win."""
    envelope = Envelope(
        [message(context={"ip": "1.2.3.4"}, integrations={"All": False}), message(2)],
        context={"ip": "9.9.9.9", "locale": "en-US"},
        integrations={"All": True, "Mixpanel": True},
    )
    first, second = stored(envelope)
    assert first["context"] == {"ip": "1.2.3.4", "locale": "en-US"}
    assert first["integrations"] == {"All": False, "Mixpanel": True}
    assert second["context"] == {"ip": "9.9.9.9", "locale": "en-US"}


def test_single_message_route_sets_the_type_and_drops_the_write_key() -> None:
    """`/v1/track` bodies may omit type; writeKey is auth, never stored; a mismatch is refused."""
    body = {"userId": "u", "event": "E", "writeKey": "secret"}
    envelope = parse_single(orjson.dumps(body), "track")
    assert envelope.write_key == "secret"
    (stored_message,) = stored(envelope)
    assert stored_message["type"] == "track"
    assert "writeKey" not in stored_message
    mismatch = process(
        parse_single(b'{"type": "identify", "userId": "u"}', "track"),
        source="k",
        received_at=RECEIVED,
    )
    assert mismatch.rejections[0].code == "invalid_type"


def test_row_columns() -> None:
    """The indexed columns: page/screen names go in `event` like track events."""
    rows = process(
        Envelope([message(1), {"type": "page", "anonymousId": "a", "name": "Home"}]),
        source="src",
        received_at=RECEIVED,
    ).rows
    assert (rows[0].type, rows[0].user_id, rows[0].event, rows[0].source) == (
        "track",
        "user-1",
        "Item Purchased",
        "src",
    )
    assert (rows[1].anonymous_id, rows[1].user_id, rows[1].event) == ("a", None, "Home")


def test_unrepresentable_values_reject_only_their_message() -> None:
    """A lone surrogate or a number beyond a double fails its message, not the batch."""
    body = (
        b'{"batch": [{"type": "track", "userId": "u", "event": "\\ud800"},'
        b' {"type": "track", "userId": "u", "event": "E", "properties": {"n": 1e400}},'
        b' {"type": "track", "userId": "u", "event": "E"}]}'
    )
    processed = process(parse_batch(body), source="k", received_at=RECEIVED)
    assert [r.code for r in processed.rejections] == ["invalid_value", "invalid_value"]
    assert len(processed.rows) == 1


#: A message with a NUL in each indexed field, and the field the rejection must name.
NUL_IN_INDEXED_FIELDS = {
    "messageId": message(messageId="message-\x00"),
    "userId": message(userId="user\x00"),
    "anonymousId": message(anonymousId="\x00"),
    "event": message(event="Item\x00Purchased"),
    "name": {"type": "page", "anonymousId": "a", "name": "Home\x00"},
    # Refused whatever the type: a track's name is not indexed, but the rule is one for all.
    "name of a track": message(name="\x00Home"),
}


@pytest.mark.parametrize("case", NUL_IN_INDEXED_FIELDS)
def test_a_nul_in_an_indexed_field_rejects_its_message_alone(case: str) -> None:
    """PostgreSQL's text cannot hold NUL: a message with one in messageId, userId,
    anonymousId, event or name is rejected, naming the field, and its neighbours are stored."""
    batch = [message(1), NUL_IN_INDEXED_FIELDS[case], message(2)]
    processed = process(Envelope(batch), source="key", received_at=RECEIVED)
    assert [row.message_id for row in processed.rows] == ["message-1", "message-2"]
    field = case.split()[0]
    assert processed.rejections == [
        Rejection(1, "invalid_field", f"{field} must not contain the NUL character (U+0000)")
    ]


def test_a_nul_anywhere_else_and_backslashes_are_stored_as_sent() -> None:
    """A NUL in properties, traits, context, a key or an unindexed field is kept; so are
    indexed fields holding backslashes or the six characters `\\u0000`, which the stored JSON
    escapes but which hold no NUL."""
    sent = [
        message(1, properties={"note": "a\x00b", "k\x00ey": ["\x00"]}, context={"x": "\x00"}),
        {"type": "identify", "userId": "u", "traits": {"name": "\x00"}, "messageId": "m-2"},
        {"type": "group", "userId": "u", "groupId": "g\x00", "category": "\x00"},
        message(4, userId="back\\slash", event="E\\u0000", anonymousId='"quoted"'),
    ]
    kept = stored(Envelope(sent))
    for before, after in zip(sent, kept, strict=True):
        assert {key: after[key] for key in before if key != "messageId"} == {
            key: value for key, value in before.items() if key != "messageId"
        }
    rows = process(Envelope(sent[3:]), source="key", received_at=RECEIVED).rows
    assert (rows[0].user_id, rows[0].event, rows[0].anonymous_id) == (
        "back\\slash",
        "E\\u0000",
        '"quoted"',
    )


def test_timestamps_are_written_utc_with_milliseconds() -> None:
    """Every stored timestamp has one sortable form."""
    moment = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC) + timedelta(hours=0)
    assert format_timestamp(moment) == "2026-01-02T03:04:05.678Z"
    parsed = parse_timestamp("2026-01-02T05:04:05.5+02:00")
    assert parsed is not None
    assert format_timestamp(parsed) == "2026-01-02T03:04:05.500Z"
    naive = parse_timestamp("2026-01-02T03:04:05")
    assert naive is not None
    assert naive.tzinfo is UTC
    with pytest.raises(ValueError):
        parse_timestamp(12)


def test_type_of_the_wrong_json_kind_is_rejected_not_a_crash() -> None:
    """A list or object as `type` is an invalid type like any unknown name."""
    processed = process(
        Envelope([{"type": [], "userId": "u"}, {"type": {}, "userId": "u"}]),
        source="k",
        received_at=RECEIVED,
    )
    assert [r.code for r in processed.rejections] == ["invalid_type", "invalid_type"]


def test_skew_that_would_leave_the_calendar_keeps_the_client_timestamp() -> None:
    """A correction past year 9999 is not applied, rather than rejecting the message."""
    envelope = Envelope(
        [message(timestamp="9999-12-31T23:59:59.000Z")],
        sent_at=datetime(2000, 1, 1, tzinfo=UTC),
    )
    assert stored(envelope)[0]["timestamp"] == "9999-12-31T23:59:59.000Z"


def test_timestamps_formatted_from_the_per_second_cache_match_format_timestamp() -> None:
    # Enrichment formats each second once per request; the text must be format_timestamp's.
    from trackline.collector.ingest import _Request, parse_batch

    request = _Request.of(parse_batch(b'{"batch": []}'), "k", datetime.now(UTC), None)
    offsets = [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-11)]
    starts = [
        datetime(1969, 12, 31, 23, 59, 59, 999_999),
        datetime(1970, 1, 1),
        datetime(2026, 11, 29, 16, 0, 0, 123_456),
        datetime(1, 1, 2, 0, 0, 0, 1_000),
        datetime(9999, 12, 30, 23, 59, 59, 999_999),
    ]
    for start in starts:
        for offset in offsets:
            for step in range(0, 3_000_000, 250_001):
                moment = (start + timedelta(microseconds=step)).replace(tzinfo=timezone(offset))
                assert request.stamp(moment) == format_timestamp(moment)
                assert request.stamp(moment) == format_timestamp(moment)  # from the cache
