"""Building messages from call arguments: the Spec's shape, timestamps, ids and validation."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import decimal
import enum
import json
import re
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import spec
from trackline import messages
from trackline._version import __version__
from trackline.errors import InvalidMessage, InvalidMessageType, MessageTooLarge
from trackline.wire import MAX_MESSAGE_BYTES, MESSAGE_TYPES

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VALID = spec.load("valid-messages.json")


def decode(built: tuple[str, bytes]) -> dict[str, Any]:
    return dict(json.loads(built[1]))


def build_like(example: dict[str, Any]) -> dict[str, Any]:
    """Build a message from the call arguments that describe `example`."""
    kind = example["type"]
    fields = {
        "identify": lambda: messages.identify_fields(example.get("traits")),
        "track": lambda: messages.track_fields(example.get("event"), example.get("properties")),
        "page": lambda: messages.page_fields(
            example.get("name"), example.get("category"), example.get("properties")
        ),
        "screen": lambda: messages.page_fields(
            example.get("name"), example.get("category"), example.get("properties")
        ),
        "group": lambda: messages.group_fields(example.get("groupId"), example.get("traits")),
        "alias": lambda: messages.alias_fields(example.get("previousId")),
    }[kind]()
    context = example["context"]
    if isinstance(context, dict):
        context = {k: v for k, v in context.items() if k != "library"} or None
    return decode(
        messages.build(
            kind,
            fields,
            user_id=example.get("userId"),
            anonymous_id=example.get("anonymousId"),
            context=context,
            integrations=example.get("integrations"),
            timestamp=example["timestamp"],
            message_id=example["messageId"],
        )
    )


@pytest.mark.parametrize("name", sorted(VALID))
def test_builds_the_spec_examples_exactly(name: str) -> None:
    """Each of the seed's examples comes out exactly as the shared Spec file writes it."""
    example = VALID[name]
    assert build_like(example) == example


def test_every_message_has_id_timestamp_and_library() -> None:
    """A message gets a messageId, a UTC timestamp with milliseconds and context.library."""
    message = decode(
        messages.build(
            "track",
            messages.track_fields("E", None),
            user_id="u",
            anonymous_id=None,
            context=None,
            integrations=None,
            timestamp=None,
            message_id=None,
        )
    )
    assert ISO_MS.match(message["timestamp"])
    assert uuid.UUID(message["messageId"]).version == 4
    assert message["context"]["library"] == {"name": "trackline", "version": __version__}
    stamped = dt.datetime.fromisoformat(message["timestamp"])
    assert abs((dt.datetime.now(dt.UTC) - stamped).total_seconds()) < 5


def test_message_ids_are_unique() -> None:
    """Ids never repeat, even in a tight loop."""
    ids = {messages.new_message_id() for _ in range(50_000)}
    assert len(ids) == 50_000


def test_message_ids_are_unique_across_threads_and_well_formed() -> None:
    """Threads taking ids at once, across many refills of the id pool, never share one, and
    every id is a version-4 UUID string."""
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        for _ in range(20_000):
            into.append(messages.new_message_id())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [mid for into in taken for mid in into]
    assert len(set(ids)) == len(ids) == 80_000
    assert {uuid.UUID(mid).version for mid in ids[::997]} == {4}


def test_now_iso_matches_the_clock() -> None:
    """The fast timestamp agrees with datetime to the millisecond range."""
    before = dt.datetime.now(dt.UTC)
    stamp = dt.datetime.fromisoformat(messages.now_iso())
    after = dt.datetime.now(dt.UTC)
    assert before - dt.timedelta(milliseconds=1) <= stamp <= after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2010, 1, 18, 12, 30, 1, 123456, tzinfo=dt.UTC), "2010-01-18T12:30:01.123Z"),
        (
            dt.datetime(2010, 1, 18, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2010-01-18T12:00:00.000Z",
        ),
        ("2010-01-18T00:00:00Z", "2010-01-18T00:00:00.000Z"),
        ("2010-01-18T02:00:00.5+02:00", "2010-01-18T00:00:00.500Z"),
    ],
)
def test_timestamps_are_normalised_to_utc(value: Any, expected: str) -> None:
    """Aware datetimes and ISO strings become UTC ISO-8601 with milliseconds."""
    assert messages.format_timestamp(value) == expected


def test_bad_timestamp_names_the_field() -> None:
    """A timestamp that is not ISO-8601 raises InvalidMessage naming `timestamp`."""
    with pytest.raises(InvalidMessage) as info:
        messages.format_timestamp("yesterday")
    assert info.value.field == "timestamp"
    with pytest.raises(InvalidMessageType, match="timestamp"):
        messages.format_timestamp(12345)  # type: ignore[arg-type]


def _track(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "user_id": "u",
        "anonymous_id": None,
        "context": None,
        "integrations": None,
        "timestamp": None,
        "message_id": None,
    }
    event = overrides.pop("event", "E")
    properties = overrides.pop("properties", None)
    args.update(overrides)
    return decode(messages.build("track", messages.track_fields(event, properties), **args))


@pytest.mark.parametrize(
    ("overrides", "field", "error"),
    [
        ({"user_id": None}, "user_id", InvalidMessage),
        ({"user_id": ""}, "user_id", InvalidMessage),
        ({"event": None}, "event", InvalidMessage),
        ({"event": ""}, "event", InvalidMessage),
        ({"event": 5}, "event", InvalidMessageType),
        ({"user_id": 1.5}, "user_id", InvalidMessageType),
        ({"user_id": True}, "user_id", InvalidMessageType),
        ({"properties": ["a", "b"]}, "properties", InvalidMessageType),
        ({"context": "web"}, "context", InvalidMessageType),
        ({"integrations": 1}, "integrations", InvalidMessageType),
        ({"message_id": "x" * 100}, "message_id", InvalidMessage),
        ({"message_id": 42}, "message_id", InvalidMessageType),
        ({"timestamp": "yesterday"}, "timestamp", InvalidMessage),
    ],
)
def test_bad_arguments_raise_naming_the_field(
    overrides: dict[str, Any], field: str, error: type[Exception]
) -> None:
    """Each invalid argument raises a ValueError/TypeError subclass whose `field` names it."""
    with pytest.raises(error) as info:
        _track(**overrides)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert field in str(info.value)
    assert isinstance(info.value, (ValueError, TypeError))


def test_group_requires_group_id_and_alias_previous_id() -> None:
    """group without group_id and alias without previous_id name their field."""
    with pytest.raises(InvalidMessage, match="group_id"):
        messages.group_fields(None, None)
    with pytest.raises(InvalidMessage, match="previous_id"):
        messages.alias_fields("")


def test_anonymous_id_alone_is_enough_and_integer_ids_become_strings() -> None:
    """Either id suffices; integer ids are sent as strings."""
    message = _track(user_id=None, anonymous_id=42)
    assert message["anonymousId"] == "42"
    assert "userId" not in message


def test_message_over_32kb_is_refused() -> None:
    """A message over 32 KB once encoded raises MessageTooLarge."""
    with pytest.raises(MessageTooLarge) as info:
        _track(properties={"pad": "x" * MAX_MESSAGE_BYTES})
    assert "32768" in str(info.value)


def test_callers_dicts_are_not_mutated() -> None:
    """Building a message leaves the caller's properties, context and integrations as they were."""
    properties = {"a": {"nested": [1, 2]}}
    context = {"ip": "1.2.3.4", "library": {"name": "mine"}}
    integrations = {"All": False}
    before = copy.deepcopy((properties, context, integrations))
    message = _track(properties=properties, context=context, integrations=integrations)
    assert (properties, context, integrations) == before
    assert message["context"]["library"]["name"] == "trackline"
    assert message["context"]["ip"] == "1.2.3.4"


def test_base_context_is_merged_under_the_calls_context() -> None:
    """Scope context applies to every call, and the call's own keys win."""
    built = messages.build(
        "track",
        messages.track_fields("E", None),
        user_id="u",
        anonymous_id=None,
        context={"ip": "call"},
        integrations=None,
        timestamp=None,
        message_id=None,
        base_context={"ip": "scope", "locale": "fr-FR"},
    )
    context = decode(built)["context"]
    assert context["ip"] == "call"
    assert context["locale"] == "fr-FR"


def test_call_context_adds_to_the_scopes_nested_keys() -> None:
    """A call's `page` dict adds to the scope's `page` instead of replacing it."""
    built = messages.build(
        "track",
        messages.track_fields("E", None),
        user_id="u",
        anonymous_id=None,
        context={"page": {"title": "Home", "path": "/own"}},
        integrations=None,
        timestamp=None,
        message_id=None,
        base_context={"page": {"url": "http://x/a", "path": "/a"}},
    )
    page = decode(built)["context"]["page"]
    assert page == {"url": "http://x/a", "path": "/own", "title": "Home"}


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_common_python_values_serialise_sensibly() -> None:
    """datetime, date, Decimal, UUID, Enum, set, tuple and dataclasses become plain JSON."""
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    message = _track(
        properties={
            "when": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "day": dt.date(2020, 1, 2),
            "price": decimal.Decimal("39.95"),
            "id": ident,
            "color": Color.RED,
            "tags": {"a"},
            "pair": (1, 2),
            "point": Point(1, 2),
            "nan": decimal.Decimal("NaN"),
        }
    )
    props = message["properties"]
    assert props["when"] == "2020-01-02T03:04:05+00:00"
    assert props["day"] == "2020-01-02"
    assert props["price"] == 39.95
    assert props["id"] == str(ident)
    assert props["color"] == "red"
    assert props["tags"] == ["a"]
    assert props["pair"] == [1, 2]
    assert props["point"] == {"x": 1, "y": 2}
    assert props["nan"] is None


def test_integer_keys_are_written_as_strings() -> None:
    """A dict with non-string keys still encodes: the keys become JSON strings."""
    message = _track(properties={1: "one", "nested": {2.5: "x"}})
    assert message["properties"] == {"1": "one", "nested": {"2.5": "x"}}


def test_an_encoded_message_costs_its_length() -> None:
    """The bytes kept for a message are sized to it, not to the encoder's working buffer."""
    fields = messages.track_fields("E", {"k": "v"})
    _, data = messages.build("track", fields, "u", None, None, None, None, None)
    assert data.endswith(b"}")
    assert sys.getsizeof(data) < len(data) + 64


def test_decimal_is_written_exactly() -> None:
    """A Decimal keeps its digits on the wire instead of passing through a binary float."""
    _, data = messages.build(
        "track",
        messages.track_fields("E", {"d": decimal.Decimal("0.1")}),
        user_id="u",
        anonymous_id=None,
        context=None,
        integrations=None,
        timestamp=None,
        message_id=None,
    )
    assert b'"d":0.1' in data


def test_unserialisable_value_is_a_type_error_naming_the_key() -> None:
    """An object JSON cannot hold raises InvalidMessageType naming its path."""
    with pytest.raises(InvalidMessageType) as info:
        _track(properties={"ok": 1, "nested": {"bad": object()}})
    assert info.value.field == "properties.nested.bad"
    assert isinstance(info.value, TypeError)


def test_lone_surrogate_is_refused_naming_the_key() -> None:
    """A string that is not valid UTF-8 is refused with the key named."""
    with pytest.raises(InvalidMessage) as info:
        _track(properties={"s": "\ud800"})
    assert info.value.field == "properties.s"


def test_deep_nesting_is_refused() -> None:
    """Nesting beyond what JSON encoders allow is refused, not a crash."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(400):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidMessage):
        _track(properties=deep)


INVALID = spec.load("invalid-messages.json")


@pytest.mark.parametrize("case", INVALID, ids=[case["why"] for case in INVALID])
def test_client_refuses_the_spec_invalid_messages(case: dict[str, Any]) -> None:
    """The messages a collector rejects cannot be built by the client either."""
    example = dict(case["message"])
    example.setdefault("context", {"library": {}})
    with pytest.raises((InvalidMessage, InvalidMessageType, KeyError)) as info:
        build_like(example)
    if info.type is KeyError:  # an unknown type has no builder at all
        assert example["type"] not in MESSAGE_TYPES


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(0, 9), children, max_size=3)
    ),
    max_leaves=8,
)
identifiers = st.none() | st.text(max_size=10) | st.integers(-5, 10**12) | st.booleans()
mappings = st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4)


any_call = st.tuples(
    identifiers,
    st.none() | st.text(max_size=12) | st.integers(0, 3),
    mappings
    | st.dictionaries(st.text(max_size=4), json_values).map(types.MappingProxyType)
    | st.just([1, 2]),
    st.none() | identifiers,
    mappings,
    mappings,
    st.none() | st.datetimes(timezones=st.just(dt.UTC)),
    st.none() | st.text(min_size=1, max_size=12),
    mappings,
)
#: What most apps call: a string user id, an event name, a dict of properties, nothing else.
common_call = st.tuples(
    st.text(max_size=10),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=8) | st.integers(0, 9), json_values, max_size=5),
    st.none(),
    st.none(),
    st.none(),
    st.none(),
    st.none(),
    st.none(),
)


@settings(max_examples=200, deadline=None)
@given(call=common_call | any_call)
def test_the_fast_track_path_builds_what_the_general_path_builds(call: tuple[Any, ...]) -> None:
    """`build_track` (the measured fast path of `track()`) and `build` with `track_fields`
    give the same message id and the same bytes for any arguments, or raise the same error
    naming the same field."""
    user_id, event, properties, *arguments = call

    def fast() -> tuple[str, bytes]:
        return messages.build_track(user_id, event, properties, *arguments)

    def general() -> tuple[str, bytes]:
        fields = messages.track_fields(event, properties)
        return messages.build("track", fields, user_id, *arguments)

    assert outcome(fast) == outcome(general)


def outcome(build: Callable[[], tuple[str, bytes]]) -> object:
    """What a builder returns, with the id and the clock fixed, or the error it raises."""
    with fixed_ids_and_clock():
        try:
            return build()
        except (InvalidMessage, InvalidMessageType) as error:
            return type(error), str(error)


@contextlib.contextmanager
def fixed_ids_and_clock() -> Iterator[None]:
    saved = messages._next_id, messages.now_iso
    messages._next_id = lambda: "00000000-0000-4000-a000-000000000001"
    messages.now_iso = lambda: "2026-11-28T17:00:00.000Z"
    try:
        yield
    finally:
        messages._next_id, messages.now_iso = saved
