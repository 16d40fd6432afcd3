"""Bad input from the app (reliability research, table B1, c21), end to end: whatever a call
is given, it either returns an id, and the message arrives as JSON would have it, or raises a
`MessageError` naming the field, and then nothing of it was counted or queued."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import trackline
from tests.support.faultproxy import FaultProxy
from tests.support.ledger import CollectorStore, Ledger

MakeClient = Callable[..., trackline.Client]


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


#: Values apps really pass: some JSON has no word for, some it cannot hold at all.
AWKWARD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(st.characters(codec=None, categories=None), max_size=10),
    st.binary(max_size=5),
    st.decimals(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.uuids(),
    st.sets(st.integers(0, 5), max_size=3),
    st.just(Colour.RED),
    st.just(Point(1, 2)),
    st.builds(object),
    st.builds(cycle),
    st.integers(min_value=1, max_value=400).map(lambda depth: _nest(depth)),
    st.integers(min_value=30_000, max_value=40_000).map(lambda size: "x" * size),
)


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


PROPERTIES = st.dictionaries(
    st.one_of(st.text(max_size=5), st.integers(0, 3), st.tuples(st.integers())),
    AWKWARD,
    max_size=3,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(PROPERTIES, min_size=1, max_size=8))
def test_c21_bad_app_input_is_refused_by_the_call_or_delivered_as_json(
    proxy: FaultProxy,
    store: CollectorStore,
    batch: list[dict[Any, Any]],
) -> None:
    """Each call raises a MessageError (InvalidMessage, InvalidMessageType, MessageTooLarge)
    naming a field, counting nothing, or returns an id; every id returned is stored with the
    properties JSON gives them (NaN as null, Decimal exact, sets as lists...)."""
    ledger = Ledger("c21")
    client = trackline.Client("input-key", host=proxy.url, on_error=ledger.on_error)
    accepted: dict[str, Any] = {}
    refused: list[tuple[trackline.MessageError, int, int]] = []
    try:
        for properties in batch:
            message_id = str(uuid.uuid4())
            before = client.stats.enqueued
            try:
                returned = client.track("user", "Awkward", properties, message_id=message_id)
            except trackline.MessageError as exc:
                refused.append((exc, before, client.stats.enqueued))
                continue
            event("accepted" if accepted else "accepted (first)")
            assert returned == message_id
            ledger.adopt([message_id], {})
            accepted[message_id] = properties
        assert client.flush(5)
    finally:
        client.shutdown(1)
    for error, before, after in refused:
        event(type(error).__name__)
        assert error.field
        assert after == before
    account = ledger.settle(client, [row for row in store.stored_ids() if row in accepted])
    account.assert_exact()
    stored = store.bodies(accepted)
    for message_id, properties in accepted.items():
        expected = orjson.loads(trackline.encoding.dumps(properties))
        assert orjson.loads(stored[message_id])["properties"] == expected


def test_c21_non_finite_numbers_arrive_as_null(
    proxy: FaultProxy, store: CollectorStore, make_client: MakeClient
) -> None:
    """NaN and infinities, which JSON cannot write, arrive as null rather than failing."""
    client = make_client("input-key", host=proxy.url)
    values = {"nan": math.nan, "inf": math.inf, "dec": decimal.Decimal("NaN")}
    message_id = client.track("user", "Non-finite", values)
    assert message_id is not None
    assert client.flush(5)
    stored = orjson.loads(store.bodies([message_id])[message_id])
    assert stored["properties"] == {"nan": None, "inf": None, "dec": None}
