"""The delivery loop with a scripted transport and a fake clock: retry rules without sleeping."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading

from trackline.buffer import MemoryBuffer
from trackline.config import Config
from trackline.delivery import Delivery
from trackline.errors import DeliveryError
from trackline.report import Reporter
from trackline.transport import Response


class FakeClock:
    """Monotonic and wall time that only move when the code under test waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


class ScriptedTransport:
    """Answers requests from a list; records the request bodies and when they were made."""

    def __init__(self, clock: FakeClock, *answers: Response) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.sent: list[tuple[float, bytes]] = []

    def post(self, path: str, body: bytes | bytearray) -> Response:
        self.sent.append((self.clock.now, bytes(body)))
        return self.answers.pop(0) if self.answers else Response(200)

    def reset_after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


def setup(
    *answers: Response, **options: object
) -> tuple[Delivery, MemoryBuffer, ScriptedTransport, FakeClock, list[DeliveryError]]:
    clock = FakeClock()
    config = Config(write_key="k", **options)  # type: ignore[arg-type]
    transport = ScriptedTransport(clock, *answers)
    buffer = MemoryBuffer(100, 10_000_000, 100)
    errors: list[DeliveryError] = []
    reporter = Reporter(lambda error, messages: errors.append(error), None)
    delivery = Delivery(
        config,
        transport,
        buffer,
        reporter,
        threading.Event(),
        rng=random.Random(3),
        clock=clock.monotonic,
        wall_clock=clock.wall,
        wait=clock.wait,
    )
    return delivery, buffer, transport, clock, errors


def queue(buffer: MemoryBuffer, count: int) -> None:
    for index in range(count):
        buffer.put(b'{"i":%d}' % index)
    buffer.request_flush()


def test_retry_after_is_waited_exactly_and_shared() -> None:
    """A 429 with Retry-After: 7 waits 7 s, and the pause is visible to every worker."""
    delivery, buffer, transport, clock, _ = setup(Response(429, retry_after="7"))
    queue(buffer, 1)
    batch = buffer.take(10, 100_000, 0)
    assert batch is not None
    assert delivery.deliver(batch)
    assert clock.waits == [7.0]
    assert transport.sent[1][0] - transport.sent[0][0] == 7.0


def test_backoff_waits_grow_and_stay_under_the_cap() -> None:
    """Successive retries wait under base*2**n, never above the cap."""
    answers = [Response(503) for _ in range(8)]
    delivery, buffer, _, clock, _ = setup(*answers, backoff_base=1.0, backoff_cap=5.0)
    queue(buffer, 1)
    batch = buffer.take(10, 100_000, 0)
    assert batch is not None
    assert delivery.deliver(batch)
    assert len(clock.waits) == 8
    for retry, waited in enumerate(clock.waits):
        assert 0 <= waited <= min(5.0, 2.0**retry)


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    """A Retry-After longer than what is left of delivery_timeout drops now, not later."""
    delivery, buffer, transport, clock, errors = setup(
        Response(503, retry_after="120"), delivery_timeout=60.0
    )
    queue(buffer, 2)
    batch = buffer.take(10, 100_000, 0)
    assert batch is not None
    assert not delivery.deliver(batch)
    assert clock.waits == []
    assert len(transport.sent) == 1
    assert [error.reason for error in errors] == ["delivery_timeout"]
    assert buffer.counters.snapshot().dropped == {"delivery_timeout": 2}


def test_413_halves_until_parts_fit() -> None:
    """A 413 splits into halves; each half is sent separately and the whole batch delivered."""
    delivery, buffer, transport, _, _ = setup(Response(413), Response(413))
    queue(buffer, 4)
    batch = buffer.take(10, 100_000, 0)
    assert batch is not None
    assert delivery.deliver(batch)
    counts = [body.count(b'{"i":') for _, body in transport.sent]
    assert counts == [4, 2, 1, 1, 2]
    stats = buffer.counters.snapshot()
    assert (stats.delivered, stats.in_flight, stats.unaccounted) == (4, 0, 0)


def test_sent_at_is_fresh_on_every_attempt() -> None:
    """Each attempt carries its own sentAt, so the server's skew correction stays right."""
    delivery, buffer, transport, _clock, _ = setup(Response(503, retry_after="2"))
    queue(buffer, 1)
    batch = buffer.take(10, 100_000, 0)
    assert batch is not None
    delivery.deliver(batch)
    first, second = (json.loads(body) for _, body in transport.sent)
    assert first["batch"] == second["batch"]
    gap = dt.datetime.fromisoformat(second["sentAt"]) - dt.datetime.fromisoformat(first["sentAt"])
    assert gap == dt.timedelta(seconds=2)
