"""`trackline.replay`: wire-format messages back into client calls."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from trackline.errors import InvalidMessage, InvalidMessageType
from trackline.replay import replay, wire_name
from trackline.testing import Capture

SPEC = pathlib.Path(__file__).parent / "spec"
VALID: dict[str, dict[str, Any]] = json.loads((SPEC / "valid-messages.json").read_text())


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_replayed_spec_message_is_sent_unchanged(name: str) -> None:
    """Every valid example goes out with the same fields, messageId and timestamp included."""
    capture = Capture()
    client = capture.client()
    original = VALID[name]
    assert replay(client, original) == original["messageId"]
    sent = capture.messages[0]
    for key, value in original.items():
        if key != "context":
            assert sent[key] == value, key
    for key, value in original["context"].items():
        if key != "library":
            assert sent["context"][key] == value


def test_original_timestamp_is_used_when_timestamp_is_missing() -> None:
    """Exports that only carry `originalTimestamp` keep the time the event happened."""
    capture = Capture()
    message = {"type": "track", "userId": "u", "event": "E", "originalTimestamp": "2020-02-03"}
    replay(capture.client(), message)
    assert capture.messages[0]["timestamp"].startswith("2020-02-0")


def test_server_fields_are_ignored() -> None:
    """receivedAt, sentAt and writeKey of a stored message do not reach the new message."""
    capture = Capture()
    message = {
        "type": "identify",
        "userId": "u",
        "receivedAt": "2020-01-01T00:00:00Z",
        "sentAt": "2020-01-01T00:00:00Z",
        "writeKey": "secret",
    }
    replay(capture.client(), message)
    assert not {"receivedAt", "sentAt", "writeKey"} & set(capture.messages[0])


@pytest.mark.parametrize(
    ("message", "error", "field"),
    [
        ({"userId": "u", "event": "E"}, InvalidMessage, "type"),
        ({"type": "click", "userId": "u"}, InvalidMessage, "type"),
        ({"type": "track", "event": "E"}, InvalidMessage, "user_id"),
        ({"type": "track", "userId": "u"}, InvalidMessage, "event"),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": []},
            InvalidMessageType,
            "properties",
        ),
        ({"type": "group", "userId": "u"}, InvalidMessage, "group_id"),
        ({"type": "alias", "userId": "u"}, InvalidMessage, "previous_id"),
        (
            {"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"},
            InvalidMessage,
            "timestamp",
        ),
    ],
)
def test_invalid_messages_raise_naming_the_field(
    message: dict[str, Any], error: type[Exception], field: str
) -> None:
    """A message that is not a valid Spec message fails like the call would, naming the field."""
    with pytest.raises(error) as raised:
        replay(Capture().client(), message)
    assert getattr(raised.value, "field", None) == field


def test_a_non_object_is_refused() -> None:
    """A JSON array or string is not a message."""
    with pytest.raises(InvalidMessageType, match="message: must be a JSON object, not list"):
        replay(Capture().client(), [])  # type: ignore[arg-type]


def test_wire_name_maps_argument_names() -> None:
    """Arguments named differently on the wire are translated; others pass through."""
    assert wire_name("user_id") == "userId"
    assert wire_name("previous_id") == "previousId"
    assert wire_name("event") == "event"
