"""The wire facts are one set for the client and the collector: limits, types, batch bodies and
what a timestamp without a zone means."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackline import messages, wire
from trackline.buffer import MemoryBuffer
from trackline.collector import ingest
from trackline.errors import InvalidMessage

SENT = "2026-11-28T17:00:00.000Z"


def test_the_collector_takes_its_limits_and_types_from_the_wire_module() -> None:
    """Every limit, the message types and the timestamp rules the collector applies are the
    ones the client applies."""
    assert ingest.MAX_MESSAGE_BYTES is wire.MAX_MESSAGE_BYTES
    assert ingest.MAX_REQUEST_BYTES is wire.MAX_REQUEST_BYTES
    assert ingest.MAX_BATCH_MESSAGES is wire.MAX_BATCH_MESSAGES
    assert ingest.MAX_MESSAGE_ID_CHARS is wire.MAX_MESSAGE_ID_CHARS
    assert ingest.MESSAGE_TYPES is wire.MESSAGE_TYPES
    assert ingest.parse_timestamp is wire.parse_timestamp
    assert ingest.has_written_layout is wire.has_written_layout
    assert wire.MAX_BATCH_BYTES <= wire.MAX_REQUEST_BYTES


def test_a_string_without_an_offset_is_utc_for_client_and_collector() -> None:
    """`2010-01-18T09:00:00` means 09:00 UTC whether a call is given it or the collector
    receives it."""
    client_side = messages.format_timestamp("2010-01-18T09:00:00")
    collector_side = wire.parse_timestamp("2010-01-18T09:00:00")
    assert collector_side is not None
    assert client_side == wire.format_timestamp(collector_side) == "2010-01-18T09:00:00.000Z"


def test_a_naive_datetime_and_a_date_are_local_time() -> None:
    """A naive datetime is local time as Python reads it; a date is its local midnight."""
    naive = dt.datetime(2010, 1, 18, 9, 0, 0)
    local = naive.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert messages.format_timestamp(naive) == local
    midnight = dt.datetime(2010, 1, 18).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert messages.format_timestamp(dt.date(2010, 1, 18)) == midnight


def test_every_timestamp_has_the_one_written_form() -> None:
    """UTC, milliseconds, `Z`, four-digit years: the form that sorts as text."""
    early = dt.datetime(999, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert wire.format_timestamp(early) == "0999-01-02T03:04:05.678Z"
    assert len(messages.now_iso()) == wire.TIMESTAMP_CHARS


@given(sizes=st.lists(st.integers(min_value=1, max_value=wire.MAX_MESSAGE_BYTES), min_size=1))
def test_a_batch_cut_to_the_room_is_a_body_within_the_request_limit(sizes: list[int]) -> None:
    """Messages taken within `BATCH_ROOM` make a request body of at most `MAX_BATCH_BYTES`,
    and one more message would not have fit."""
    buffer = MemoryBuffer(max_items=10_000, max_bytes=10**9, flush_at=1)
    for size in sizes:
        assert buffer.put(b"1" * size) is None
    batch = buffer.take(wire.MAX_BATCH_MESSAGES, wire.BATCH_ROOM, wait=0.0)
    assert batch is not None
    body = batch.body(0, len(batch), SENT)
    assert len(body) <= wire.MAX_BATCH_BYTES
    if len(batch) < len(sizes):
        assert len(body) + sizes[len(batch)] + 1 > wire.MAX_BATCH_BYTES


_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=1)


@given(
    digits=st.lists(_DIGITS, min_size=17, max_size=17),
    moment=st.datetimes(timezones=st.just(dt.UTC)),
)
def test_a_timestamp_already_in_the_written_form_is_kept_only_when_valid(
    digits: list[str], moment: dt.datetime
) -> None:
    """A call's timestamp string in the written form is sent as it is (imports carry them so);
    any other string of that layout, a 30 February say, is refused as before, naming the
    field, and the kept text is what parsing and writing it again would give."""
    written = wire.format_timestamp(moment)
    assert wire.is_canonical_timestamp(written)
    assert messages.format_timestamp(written) == written
    d = "".join(digits)
    text = f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:]}Z"
    try:
        parsed = wire.parse_timestamp(text)
    except ValueError:
        assert not wire.is_canonical_timestamp(text)
        with pytest.raises(InvalidMessage) as info:
            messages.format_timestamp(text)
        assert info.value.field == "timestamp"
    else:
        assert parsed is not None
        assert wire.is_canonical_timestamp(text)
        assert messages.format_timestamp(text) == wire.format_timestamp(parsed) == text


def test_a_timestamp_near_the_written_form_is_rewritten_in_it() -> None:
    """Strings that parse but differ from the written form (no milliseconds, an offset, a
    space, a comma) are rewritten, not kept."""
    for text in (
        "2010-01-18T09:00:00Z",
        "2010-01-18T09:00:00.000+00:00",
        "2010-01-18 09:00:00.000Z",
        "2010-01-18T09:00:00,000Z",
    ):
        assert not wire.is_canonical_timestamp(text)
        assert messages.format_timestamp(text) == "2010-01-18T09:00:00.000Z"
