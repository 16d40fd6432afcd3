"""The in-memory buffer cuts batches from the front within the count and byte limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackline.buffer import MemoryBuffer


def _expected_batch(sizes: list[int], max_items: int, max_bytes: int) -> list[int]:
    """The batch by definition: take messages in order while both limits hold; the first one
    always goes, so that a message larger than the limit is not stuck forever."""
    taken: list[int] = []
    used = 0
    for size in sizes[:max_items]:
        if taken and used + size + 1 > max_bytes:
            break
        taken.append(size)
        used += size + 1
    return taken


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=80),
    max_items=st.integers(min_value=1, max_value=100),
    max_bytes=st.integers(min_value=1, max_value=2000),
)
def test_a_batch_takes_the_front_messages_that_fit(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    """take() hands out the longest run of front messages within max_items and max_bytes
    (sizes plus one separator each), at least one, in order, and accounts them in flight."""
    buffer = MemoryBuffer(max_items=1000, max_bytes=10**9, flush_at=1)
    messages = [bytes([65 + index % 26]) * size for index, size in enumerate(sizes)]
    for message in messages:
        assert buffer.put(message) is None
    batch = buffer.take(max_items, max_bytes, wait=0.0)
    assert batch is not None
    expected = _expected_batch(sizes, max_items, max_bytes)
    assert batch.messages() == messages[: len(expected)]
    assert len(buffer) == len(messages) - len(expected)
    stats = buffer.counters.snapshot()
    assert (stats.queued, stats.in_flight) == (len(buffer), len(expected))
