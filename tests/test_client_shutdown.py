"""Calls racing `shutdown()`: each one ends delivered or dropped with a reason, never stranded."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from trackline.errors import DeliveryError
from trackline.testing import Capture

THREADS = 6
ROUNDS = 40


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so a call is often preempted between
    deciding to queue and queueing: the window the race lives in."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_a_call_that_reaches_the_buffer_after_shutdown_is_dropped_as_closed() -> None:
    """A call that decided to queue just before `shutdown()` and reaches the buffer after it
    (a thread preempted between the two) is dropped as `closed` and reported, not left
    queued in a buffer nobody reads any more."""
    capture = Capture()
    errors: list[tuple[str, list[str]]] = []
    client = capture.client(
        sync=False,
        on_error=lambda error, messages: errors.append(
            (error.reason, [m["messageId"] for m in messages])
        ),
    )
    client.track("u", "Before")  # starts the worker: later calls go straight to the buffer
    put = client._buffer.put
    reached, go_on = threading.Event(), threading.Event()

    def preempted_put(data: bytes, block_timeout: float | None = None) -> Any:
        reached.set()
        go_on.wait(10)
        return put(data, block_timeout)

    client._buffer.put = preempted_put  # type: ignore[method-assign]
    result: list[str | None] = []
    caller = threading.Thread(target=lambda: result.append(client.track("u", "Raced")))
    caller.start()
    assert reached.wait(10)
    client.shutdown(timeout=1.0)
    go_on.set()
    caller.join(10)
    stats = client.stats
    assert result == [None]
    assert (stats.queued, stats.in_flight, stats.unaccounted) == (0, 0, 0), stats
    assert stats.dropped == {"closed": 1}
    assert [reason for reason, _ in errors] == ["closed"]


def race_one_shutdown() -> None:
    capture = Capture()
    dropped: dict[str, str] = {}
    lock = threading.Lock()

    def on_error(error: Any, messages: list[dict[str, Any]]) -> None:
        assert isinstance(error, DeliveryError)
        with lock:
            dropped.update((message["messageId"], error.reason) for message in messages)

    # Room for everything, so that the only refusals are the ones after shutdown.
    room = {"max_queue_size": 10**6, "max_queue_bytes": 2**30}
    client = capture.client(sync=False, on_error=on_error, flush_at=5, **room)
    returned: list[list[str]] = [[] for _ in range(THREADS)]
    refused = [0] * THREADS
    go = threading.Barrier(THREADS + 1)

    def call(slot: int) -> None:
        go.wait()
        # Keep calling until the client refuses a few calls: the last ones come after
        # shutdown() has settled everything it knew about.
        while refused[slot] < 3:
            message_id = client.track(f"user-{slot}", "Raced")
            if message_id is None:
                refused[slot] += 1
            else:
                returned[slot].append(message_id)

    threads = [threading.Thread(target=call, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    go.wait()
    while sum(map(len, returned)) < 50:
        pass
    client.shutdown(timeout=0)
    for thread in threads:
        thread.join(10)

    stats = client.stats
    assert (stats.queued, stats.in_flight) == (0, 0), stats
    assert stats.unaccounted == 0, stats
    delivered = {message["messageId"] for message in capture.messages}
    for message_id in (mid for ids in returned for mid in ids):
        assert message_id in delivered or message_id in dropped, "a returned id went nowhere"
    assert stats.dropped.get("closed", 0) == sum(refused)
    assert stats.delivered + stats.dropped_total == stats.enqueued


def test_calls_racing_shutdown_are_all_settled(fast_switching: None) -> None:
    """Threads call `track()` while another thread shuts the client down, many times over:
    afterwards nothing is queued or in flight, the ledger balances, and every id a call
    returned was delivered or passed to `on_error`."""
    for _ in range(ROUNDS):
        race_one_shutdown()
