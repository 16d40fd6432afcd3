"""The wire envelope around encoded messages."""

from __future__ import annotations

import orjson
import pytest

from trackline.encoding import envelope


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_envelope_is_a_batch_body_with_the_messages_in_order(count: int) -> None:
    """The body is `{"batch": [...], "sentAt": ...}` holding each message as encoded, in order,
    whatever the number of messages."""
    items = [orjson.dumps({"type": "track", "n": n}) for n in range(count)]
    body = envelope(items, "2026-11-28T17:00:00.000Z")
    assert orjson.loads(body) == {
        "batch": [{"type": "track", "n": n} for n in range(count)],
        "sentAt": "2026-11-28T17:00:00.000Z",
    }
    assert body.startswith(b'{"batch":[')
