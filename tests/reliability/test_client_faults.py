"""The client fault matrix (reliability research, table B1): network and server faults.

Every test sends through the fault proxy to a real HTTP server on 127.0.0.1, lets the client
settle, and settles a ledger: each message the app sent is stored or dropped with a reason, the
client's counters agree with its callbacks, and nothing is stored twice unless the test says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import trackline
from tests.support.capture import CaptureServer, Reply
from tests.support.faultproxy import (
    Bandwidth,
    BlackHole,
    Direction,
    DropResponse,
    FaultProxy,
    Latency,
    ResetPeer,
)
from tests.support.ledger import CaptureStore, CollectorStore, Ledger

MakeClient = Callable[..., trackline.Client]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def send_in_batches(ledger: Ledger, client: trackline.Client, batches: int, size: int) -> None:
    """`batches` requests of `size` messages each: a flush after every `size` calls."""
    for _ in range(batches):
        ledger.track_many(client, size)
        assert client.flush(10)


def test_c1_collector_down_then_up_loses_nothing(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Refused connections are retried with capped backoff; nothing is dropped while the buffer
    has room, and the backlog drains soon after the server is back."""
    client = ledger_client(proxy.url, flush_at=20, backoff_cap=0.2)
    proxy.down()
    ledger.track_many(client, 200)
    wait_until(lambda: client.stats.retries >= 3)
    assert store.stored_ids() == []
    recovered = time.monotonic()
    proxy.up()
    assert client.flush(5)
    time_to_recover = time.monotonic() - recovered
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.stored == 200
    assert not account.dropped
    # One backoff (capped at 0.2 s) plus the drain.
    assert time_to_recover < 1.5, time_to_recover


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_c3_5xx_bursts_are_retried_until_stored_once(
    status: int,
    capture_proxy: FaultProxy,
    capture: CaptureServer,
    ledger: Ledger,
    ledger_client: MakeClient,
) -> None:
    """A burst of five 5xx answers across two workers: every failed request is retried with the
    same messages and each message is stored exactly once."""
    capture.script(*[Reply(status)] * 5)
    client = ledger_client(capture_proxy.url, workers=2, flush_at=25)
    ledger.track_many(client, 300)
    assert client.flush(5)
    account = ledger.settle(client, CaptureStore(capture))
    account.assert_exact()
    assert account.stored == 300
    assert client.stats.retries == 5
    assert sum(1 for request in capture.requests if request.status == status) == 5


@pytest.mark.parametrize(
    ("header", "min_gap", "max_gap"),
    [("1", 0.95, 2.0), ("junk", 0.0, 0.5), ("-1", 0.0, 0.5), ("0.5", 0.45, 1.5)],
)
def test_c3_503_retry_after_values(
    header: str,
    min_gap: float,
    max_gap: float,
    capture_proxy: FaultProxy,
    capture: CaptureServer,
    ledger: Ledger,
    ledger_client: MakeClient,
) -> None:
    """503 with Retry-After: a valid value is waited for exactly, junk falls back to backoff and a
    negative value means now; the message is stored once either way."""
    capture.script(Reply(503, headers={"Retry-After": header}))
    client = ledger_client(capture_proxy.url)
    ledger.track(client)
    assert client.flush(5)
    first, second = capture.requests
    assert min_gap <= second.at - first.at <= max_gap
    ledger.settle(client, CaptureStore(capture)).assert_exact()


def test_c3_retry_after_past_the_delivery_deadline_drops_at_once(
    capture_proxy: FaultProxy, capture: CaptureServer, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Retry-After: 99999 (capped at ten minutes) cannot be honoured within delivery_timeout: the
    batch is dropped as delivery_timeout at once rather than after a pointless wait."""
    capture.script(Reply(503, headers={"Retry-After": "99999"}))
    client = ledger_client(capture_proxy.url, delivery_timeout=5.0)
    ledger.track_many(client, 3)
    started = time.monotonic()
    assert client.flush(5)
    assert time.monotonic() - started < 1.0
    account = ledger.settle(client, CaptureStore(capture))
    account.assert_exact()
    assert account.dropped == {"delivery_timeout": 3}
    assert len(capture.requests) == 1


def test_c4_429_pauses_every_worker_until_retry_after_expires(
    capture_proxy: FaultProxy, capture: CaptureServer, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """A 429 with Retry-After: 1 seen by one of three workers holds all of them: no request
    starts inside the window, and no message is dropped for it."""
    capture.script(Reply(429, headers={"Retry-After": "1"}))
    client = ledger_client(capture_proxy.url, workers=3, flush_at=10)
    ledger.track_many(client, 120)
    assert client.flush(5)
    throttled = next(request for request in capture.requests if request.status == 429)
    # Requests already on the wire when the 429 came back may land just after it.
    inside = [
        request
        for request in capture.requests
        if throttled.at + 0.1 < request.at < throttled.at + 0.95
    ]
    assert inside == []
    account = ledger.settle(client, CaptureStore(capture))
    account.assert_exact()
    assert account.stored == 120
    assert not account.dropped


@pytest.mark.parametrize(("status", "reason"), [(400, "rejected"), (401, "unauthorized")])
def test_c6_c8_refused_batch_is_dropped_once_with_its_reason(
    status: int,
    reason: str,
    capture_proxy: FaultProxy,
    capture: CaptureServer,
    ledger: Ledger,
    ledger_client: MakeClient,
) -> None:
    """400 and 401 are not retried: exactly the refused batch is dropped with its reason and
    reported to on_error message by message; the batches around it are stored."""
    capture.script(Reply(200), Reply(status, body=b'{"code":"x","message":"refused"}'))
    client = ledger_client(capture_proxy.url, flush_interval=5.0)
    sent = []
    for _ in range(3):
        sent.append(ledger.track_many(client, 10))
        assert client.flush(5)
    assert len(capture.requests) == 3
    account = ledger.settle(client, CaptureStore(capture))
    account.assert_exact()
    assert account.dropped == {reason: 10}
    assert {mid for mid, why in ledger.drops.items() if why == reason} == set(sent[1])
    assert client.stats.retries == 0


def test_c7_413_splits_and_drops_only_messages_too_large_alone(
    ledger: Ledger, ledger_client: MakeClient
) -> None:
    """A server capping decompressed bodies at 20 KB answers 413 to gzip batches: they are
    halved until they fit, and only the two messages over the cap on their own are dropped."""
    with CaptureServer(max_body=20_000) as server, FaultProxy(server.url) as proxy:
        client = ledger_client(proxy.url, workers=2, flush_at=40, flush_interval=5.0)
        ledger.track_many(client, 30, pad="x" * 1000)
        big = [ledger.track(client, {"pad": "y" * 25_000}) for _ in range(2)]
        ledger.track_many(client, 48, pad="x" * 1000)
        assert client.flush(10)
        account = ledger.settle(client, CaptureStore(server))
    account.assert_exact()
    assert account.dropped == {"too_large": 2}
    assert {mid for mid, why in ledger.drops.items() if why == "too_large"} == set(big)
    assert account.stored == 78


def test_c9_lost_answer_after_commit_is_resent_and_stored_once(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """The collector commits a batch and its answer is lost on the way back: the client resends
    the same messageIds, the collector counts them as duplicates, and each is stored once."""
    toxic = proxy.add(DropResponse(times=1))
    client = ledger_client(proxy.url, flush_interval=5.0)
    send_in_batches(ledger, client, 3, 10)
    assert toxic.fired == 1
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.stored == 30
    assert store.wire_duplicates() == 10
    assert client.stats.retries == 1


def test_c10_black_hole_flush_keeps_its_deadline_and_the_worker_recovers(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """A server that accepts and never answers: flush(0.5) returns False on time; the request
    times out, the worker retries, and once the hole closes everything is stored once."""
    hole = proxy.add(BlackHole())
    client = ledger_client(proxy.url, timeout=0.5, flush_at=20)
    ledger.track_many(client, 50)
    started = time.monotonic()
    assert client.flush(0.5) is False
    assert time.monotonic() - started < 0.6
    assert hole.wait_fired(1)
    proxy.remove(hole)
    assert client.flush(5)
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.stored == 50
    assert client.stats.retries >= 1


def test_c10_black_hole_shutdown_keeps_its_deadline_and_reports_every_leftover(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """shutdown(0.5) against a black hole returns within its deadline; the batch stuck on the
    wire and everything queued behind it are dropped as shutdown_timeout, each by id."""
    proxy.add(BlackHole())
    client = ledger_client(proxy.url, timeout=30.0, flush_at=10)
    ledger.track_many(client, 35)
    wait_until(lambda: client.stats.in_flight > 0)
    started = time.monotonic()
    assert client.shutdown(0.5) is False
    assert time.monotonic() - started < 0.6
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.dropped == {"shutdown_timeout": 35}
    assert account.stored == 0


@pytest.mark.parametrize("after_bytes", [0, 150, 600])
def test_c12_reset_mid_request_is_retried_without_loss_or_double(
    after_bytes: int,
    proxy: FaultProxy,
    store: CollectorStore,
    ledger: Ledger,
    ledger_client: MakeClient,
) -> None:
    """Three requests in ten are reset part-way (before, inside the headers, inside the body):
    each is retried, and every message is stored exactly once."""
    toxic = proxy.add(ResetPeer(after_bytes=after_bytes, toxicity=0.3))
    client = ledger_client(proxy.url, gzip=False)
    send_in_batches(ledger, client, 25, 10)
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.stored == 250
    assert toxic.fired >= 3
    assert client.stats.retries == toxic.fired


def test_c11_slow_link_delivers_everything_in_order(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """Latency 0.1 s +/- 0.05 s both ways and a 32 KB/s uplink: slower, but every message is
    stored once and, with one worker, in the order it was sent."""
    proxy.add(Latency(seconds=0.1, jitter=0.05, direction=Direction.UPSTREAM))
    proxy.add(Latency(seconds=0.1, jitter=0.05, direction=Direction.DOWNSTREAM))
    proxy.add(Bandwidth(bytes_per_second=32_000, direction=Direction.UPSTREAM))
    client = ledger_client(proxy.url, workers=1, flush_at=50, timeout=5.0)
    ledger.track_many(client, 200, pad="z" * 100)
    assert client.flush(10)
    account = ledger.settle(client, store)
    account.assert_exact()
    position = {message_id: index for index, message_id in enumerate(ledger.sent)}
    assert [position[row] for row in store.stored_ids()] == list(range(200))


def test_c2_outage_past_the_queue_bound_drops_the_overflow_exactly(
    proxy: FaultProxy, store: CollectorStore, ledger: Ledger, ledger_client: MakeClient
) -> None:
    """An outage longer than the buffer holds: the buffer fills, every call after that is
    dropped as queue_full (and reported by id), and once the collector is back everything that
    was queued is stored: dropped[queue_full] = sent - stored, exactly."""
    client = ledger_client(proxy.url, max_queue_size=100, flush_at=20)
    proxy.down()
    accepted = ledger.track_many(client, 300)
    wait_until(lambda: client.stats.retries >= 1)
    stats = client.stats
    assert stats.queued + stats.in_flight == len(accepted)
    proxy.up()
    assert client.flush(5)
    account = ledger.settle(client, store)
    account.assert_exact()
    assert account.dropped == {"queue_full": 300 - len(accepted)}
    assert account.stored == len(accepted) >= 100
