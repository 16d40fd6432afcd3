"""A batch holds its messages once, as their request body, and gives each part its own body."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from trackline.batch import Batch

SENT = "2026-11-28T17:00:00.000Z"
LATER = "2026-11-28T17:05:00.123Z"

messages_strategy = st.lists(
    st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3).map(orjson.dumps),
    min_size=1,
    max_size=30,
)


def decoded(body: bytes | bytearray) -> dict[str, object]:
    document: dict[str, object] = orjson.loads(body)
    return document


@given(items=messages_strategy)
def test_the_body_holds_every_message_as_encoded_in_order(items: list[bytes]) -> None:
    """The whole batch's body is `{"batch": [...], "sentAt": ...}` with each message exactly
    as encoded, and the messages read back from it are the ones put in."""
    batch = Batch(list(items), 0)
    body = batch.body(0, len(items), SENT)
    assert body.startswith(b'{"batch":[' + items[0])
    assert decoded(body) == {"batch": [orjson.loads(item) for item in items], "sentAt": SENT}
    assert batch.messages() == items
    assert batch.messages(1, 3) == items[1:3]


@given(items=messages_strategy)
def test_a_later_attempt_carries_its_own_sent_at(items: list[bytes]) -> None:
    """Each attempt stamps its own time in `sentAt` into the body the batch holds; the
    messages do not change."""
    batch = Batch(list(items), 0)
    first = bytes(batch.body(0, len(items), SENT))
    again = batch.body(0, len(items), LATER)
    assert decoded(first)["sentAt"] == SENT
    assert decoded(again) == {"batch": decoded(first)["batch"], "sentAt": LATER}


@given(items=messages_strategy, cuts=st.lists(st.integers(0, 29), max_size=6))
def test_every_part_of_a_split_batch_has_the_body_of_its_messages(
    items: list[bytes], cuts: list[int]
) -> None:
    """After any sequence of splits (413s), each open part's body holds exactly its slice of
    the messages, and the open parts still cover the batch once, in order."""
    batch = Batch(list(items), 0)
    batch.body(0, len(items), SENT)
    for cut in cuts:
        parts = [part for part in batch.open_parts() if part[1] - part[0] > 1]
        if parts:
            batch.split(*parts[cut % len(parts)])
    covered = []
    for start, end in batch.open_parts():
        assert decoded(batch.body(start, end, LATER)) == {
            "batch": [orjson.loads(item) for item in items[start:end]],
            "sentAt": LATER,
        }
        covered.extend(batch.messages(start, end))
    assert covered == items


def test_a_part_is_settled_once() -> None:
    """Closing a part succeeds once; a split part can only be settled through its halves."""
    batch = Batch([b"1", b"2", b"3", b"4"], 0)
    assert batch.split(0, 4) == ((0, 2), (2, 4))
    assert not batch.close(0, 4)
    assert batch.close(0, 2)
    assert not batch.close(0, 2)
    assert not batch.settled
    assert batch.close_all() == [(2, 4)]
    assert batch.settled
