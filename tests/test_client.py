"""The client against a real HTTP server on 127.0.0.1: batching, wire format, retries, deadlines."""

from __future__ import annotations

import base64
import gzip
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import trackline
from tests.support.capture import CaptureServer, Reply
from trackline.wire import MAX_BATCH_BYTES

MakeClient = Callable[..., trackline.Client]
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def assert_accounted(stats: trackline.Stats) -> None:
    assert stats.unaccounted == 0, stats


def test_calls_deliver_every_type_with_basic_auth_and_gzip(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """The six calls reach the server in one gzip batch, authenticated with the write key."""
    client = make_client("the-key", host=capture.url)
    ids = [
        client.identify("u1", {"name": "Tom", "address": {"city": "Boston"}}),
        client.track("u1", "Item Purchased", {"revenue": 39.95}),
        client.page("u1", "Login", {"path": "/login"}, category="Auth"),
        client.screen("u1", "Register", {"type": "facebook"}),
        client.group("u1", "initech", {"name": "Initech, Inc."}),
        client.alias("anonymous_user", "identified@gmail.com"),
    ]
    assert client.flush(5)
    [request] = capture.requests
    assert request.path == "/v1/batch"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.raw) == request.body
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"the-key:").decode()
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert [m["messageId"] for m in body["batch"]] == ids
    assert [m["type"] for m in body["batch"]] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    ]
    assert body["batch"][0]["traits"]["address"] == {"city": "Boston"}
    assert body["batch"][2]["category"] == "Auth"
    assert body["sentAt"].endswith("Z")
    stats = client.stats
    assert (stats.enqueued, stats.delivered, stats.batches) == (6, 6, 1)
    assert stats.bytes_sent > 0
    assert_accounted(stats)


def test_gzip_off_sends_plain_json(capture: CaptureServer, make_client: MakeClient) -> None:
    """With gzip=False the body is plain JSON and has no Content-Encoding."""
    client = make_client("k", host=capture.url, gzip=False)
    client.track("u", "E")
    assert client.flush(5)
    [request] = capture.requests
    assert "content-encoding" not in request.headers
    assert request.raw == request.body


def test_batch_goes_out_when_flush_at_messages_wait(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """flush_at messages trigger a send well before flush_interval."""
    client = make_client("k", host=capture.url, flush_at=10, flush_interval=30.0)
    for index in range(10):
        client.track("u", "E", {"i": index})
    delivered = capture.wait_for_messages(10, timeout=5)
    assert len(delivered) == 10


def test_partial_batch_goes_out_after_flush_interval(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Fewer than flush_at messages are sent once flush_interval has passed, without flush()."""
    client = make_client("k", host=capture.url, flush_at=100, flush_interval=0.2)
    started = time.monotonic()
    client.track("u", "E")
    assert len(capture.wait_for_messages(1, timeout=5)) == 1
    assert time.monotonic() - started < 2.0


def test_backlog_fills_batches_up_to_the_byte_limit(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Under backlog a batch takes as many messages as fit in 500 KB."""
    client = make_client("k", host=capture.url, flush_at=100, flush_interval=60.0, gzip=False)
    payload = {"pad": "x" * 900}
    for _ in range(2000):
        client.track("u", "E", payload)
    assert client.flush(10)
    sizes = [len(request.raw) for request in capture.requests]
    assert max(sizes) <= MAX_BATCH_BYTES
    assert max(sizes) > MAX_BATCH_BYTES * 0.95
    assert sum(len(request.batch) for request in capture.requests) == 2000


def test_flush_returns_true_with_nothing_queued(
    make_client: MakeClient, capture: CaptureServer
) -> None:
    """flush() with nothing to send returns True at once and sends nothing."""
    client = make_client("k", host=capture.url)
    assert client.flush(1)
    assert capture.requests == []


def test_5xx_burst_is_retried_with_the_same_message_ids(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """500/502/503/504 are retried; the retried batch keeps its messageIds."""
    capture.script(Reply(500), Reply(502), Reply(503), Reply(504))
    client = make_client("k", host=capture.url, **FAST)
    mid = client.track("u", "E")
    assert client.flush(5)
    assert len(capture.requests) == 5
    assert {request.batch[0]["messageId"] for request in capture.requests} == {mid}
    stats = client.stats
    assert (stats.delivered, stats.retries) == (1, 4)
    assert_accounted(stats)


def test_connection_refused_is_retried_until_the_server_is_back(
    make_client: MakeClient,
) -> None:
    """With nothing listening the client retries; events arrive once a server listens."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = make_client(
        "k",
        host=f"http://127.0.0.1:{port}",
        flush_interval=0.05,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    mid = client.track("u", "E")
    deadline = time.monotonic() + 5
    while client.stats.retries < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.stats.retries >= 2
    with CaptureServer(port=port) as server:
        assert client.flush(5)
        assert server.delivered_ids() == [mid]
    assert_accounted(client.stats)


def test_429_retry_after_is_honoured(capture: CaptureServer, make_client: MakeClient) -> None:
    """After a 429 with Retry-After: 1 no request is made before the second has passed."""
    capture.script(Reply(429, headers={"Retry-After": "1"}))
    client = make_client("k", host=capture.url, **FAST)
    client.track("u", "E")
    assert client.flush(5)
    first, second = capture.requests
    assert second.at - first.at >= 0.95
    assert client.stats.delivered == 1


def test_retry_after_as_http_date_is_honoured(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Retry-After given as an HTTP date is waited for too."""
    import email.utils

    capture.script(
        Reply(503, headers={"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)})
    )
    client = make_client("k", host=capture.url, **FAST)
    client.track("u", "E")
    assert client.flush(6)
    first, second = capture.requests
    # HTTP dates have one-second resolution: at least one second of waiting.
    assert second.at - first.at >= 0.95


@pytest.mark.parametrize(
    ("status", "reason"), [(400, "rejected"), (401, "unauthorized"), (403, "unauthorized")]
)
def test_client_errors_are_not_retried_and_reach_on_error(
    capture: CaptureServer, make_client: MakeClient, status: int, reason: str
) -> None:
    """400/401/403: one request, the batch dropped with its reason and passed to on_error."""
    capture.script(Reply(status, body=b'{"code":"x","message":"nope"}'))
    seen: list[tuple[Any, list[dict[str, Any]]]] = []
    client = make_client("k", host=capture.url, on_error=lambda e, m: seen.append((e, m)), **FAST)
    mid = client.track("u", "E")
    assert client.flush(5)
    assert len(capture.requests) == 1
    [(error, dropped)] = seen
    assert isinstance(error, trackline.DeliveryError)
    assert (error.reason, error.status) == (reason, status)
    assert [message["messageId"] for message in dropped] == [mid]
    assert client.stats.dropped == {reason: 1}


def test_413_splits_and_drops_only_the_message_too_large_alone(make_client: MakeClient) -> None:
    """413 halves the batch until parts fit; only a message that alone is too large is lost."""
    with CaptureServer(max_body=20_000) as server:
        seen: list[Any] = []
        client = make_client(
            "k",
            host=server.url,
            flush_at=50,
            flush_interval=60.0,
            gzip=False,
            on_error=lambda e, m: seen.append((e.reason, m)),
            **FAST,
        )
        ids = [client.track("u", "E", {"pad": "x" * 1000, "i": i}) for i in range(40)]
        big = client.track("u", "Big", {"pad": "x" * 25_000})
        ids += [client.track("u", "E", {"pad": "x" * 1000, "i": i}) for i in range(40, 49)]
        assert client.flush(10)
        assert sorted(server.delivered_ids()) == sorted(ids)
        assert [(reason, [m["messageId"] for m in msgs]) for reason, msgs in seen] == [
            ("too_large", [big])
        ]
        stats = client.stats
        assert stats.dropped == {"too_large": 1}
        assert stats.delivered == 49
        assert_accounted(stats)


def test_partial_rejection_in_a_200_answer_is_counted(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Messages a 200 answer lists as rejected are dropped as `rejected`, the rest delivered."""
    capture.script(
        Reply(
            200,
            body=b'{"accepted":2,"duplicates":0,'
            b'"rejected":[{"index":1,"code":"x","message":"bad"}]}',
        )
    )
    seen: list[Any] = []
    client = make_client("k", host=capture.url, on_error=lambda e, m: seen.append(m))
    ids = [client.track("u", "E", {"i": i}) for i in range(3)]
    assert client.flush(5)
    assert [[m["messageId"] for m in msgs] for msgs in seen] == [[ids[1]]]
    assert client.stats.delivered == 2
    assert client.stats.dropped == {"rejected": 1}


def test_on_success_gets_the_delivered_messages(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """on_success receives each delivered batch's messages."""
    got: list[str] = []
    client = make_client(
        "k", host=capture.url, on_success=lambda msgs: got.extend(m["messageId"] for m in msgs)
    )
    ids = [client.track("u", "E") for _ in range(5)]
    assert client.flush(5)
    assert got == ids


def test_a_raising_callback_does_not_stop_delivery(
    capture: CaptureServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_success is logged and delivery goes on."""

    def boom(messages: list[dict[str, Any]]) -> None:
        raise RuntimeError("user bug")

    client = make_client("k", host=capture.url, on_success=boom)
    client.track("u", "E")
    assert client.flush(5)
    client.track("u", "E2")
    assert client.flush(5)
    assert client.stats.delivered == 2
    records = [r for r in caplog.records if "on_success" in r.getMessage()]
    assert records
    for record in records:
        record.expected = True  # type: ignore[attr-defined]


def test_retries_exhausted_drops_with_reason(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """After max_retries failed retries the batch is dropped as retries_exhausted."""
    capture.default = Reply(503)
    client = make_client("k", host=capture.url, max_retries=2, **FAST)
    client.track("u", "E")
    assert client.flush(5)
    assert len(capture.requests) == 3
    assert client.stats.dropped == {"retries_exhausted": 1}


def test_delivery_timeout_bounds_the_retries(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Retries stop when the next one could not start within delivery_timeout."""
    capture.default = Reply(503)
    client = make_client(
        "k",
        host=capture.url,
        delivery_timeout=0.5,
        backoff_base=0.05,
        backoff_cap=0.1,
        max_retries=1000,
    )
    client.track("u", "E")
    started = time.monotonic()
    assert client.flush(5)
    assert time.monotonic() - started < 1.5
    assert client.stats.dropped == {"delivery_timeout": 1}


def test_flush_and_shutdown_keep_their_deadlines_against_a_black_hole(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """A server that accepts and never answers cannot hold flush() or shutdown() past timeout."""
    capture.default = Reply(action="hang")
    client = make_client("k", host=capture.url, timeout=30.0)
    client.track("u", "E")
    started = time.monotonic()
    assert client.flush(0.5) is False
    assert time.monotonic() - started < 0.7
    started = time.monotonic()
    assert client.shutdown(0.5) is False
    assert time.monotonic() - started < 0.7
    stats = client.stats
    assert stats.dropped == {"shutdown_timeout": 1}
    assert (stats.queued, stats.in_flight) == (0, 0)
    assert_accounted(stats)


def test_shutdown_interrupts_a_backoff_sleep(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """A worker sleeping on a long Retry-After does not hold shutdown past its timeout."""
    capture.default = Reply(503, headers={"Retry-After": "60"})
    client = make_client("k", host=capture.url)
    client.track("u", "E")
    capture.wait_for_requests(1)
    started = time.monotonic()
    client.shutdown(0.3)
    assert time.monotonic() - started < 0.6
    assert client.stats.dropped == {"shutdown_timeout": 1}


def test_reset_mid_request_is_retried(capture: CaptureServer, make_client: MakeClient) -> None:
    """A connection reset before the answer is retried and the batch delivered."""
    capture.script(Reply(action="reset"))
    client = make_client("k", host=capture.url, **FAST)
    mid = client.track("u", "E")
    assert client.flush(5)
    assert capture.delivered_ids() == [mid]
    assert client.stats.retries == 1


def test_full_buffer_drops_the_new_message_counted_and_reported(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """A full buffer drops the newest message: the call returns None, on_error hears of it."""
    capture.default = Reply(action="hang")
    seen: list[str] = []
    client = make_client(
        "k",
        host=capture.url,
        max_queue_size=5,
        flush_at=1,
        on_error=lambda e, m: seen.append(e.reason),
    )
    client.track("u", "first")  # taken by the worker, which then hangs
    capture.wait_for_requests(1)
    results = [client.track("u", "E") for _ in range(7)]
    assert results[:5] == [r for r in results[:5] if r is not None]
    assert results[5:] == [None, None]
    assert seen == ["queue_full", "queue_full"]
    stats = client.stats
    assert stats.dropped == {"queue_full": 2}
    assert (stats.queued, stats.in_flight) == (5, 1)
    assert_accounted(stats)


def test_blocking_queue_full_waits_for_room(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """queue_full="block" waits for room instead of dropping, within block_timeout."""
    capture.default = Reply(delay=0.2)
    client = make_client(
        "k", host=capture.url, max_queue_size=2, flush_at=1, queue_full="block", block_timeout=5.0
    )
    ids = [client.track("u", "E", {"i": i}) for i in range(6)]
    assert all(ids)
    assert client.flush(5)
    assert sorted(capture.delivered_ids()) == sorted(ids)


def test_blocking_gives_up_after_block_timeout(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """A blocked call returns None after block_timeout and counts queue_full."""
    capture.default = Reply(action="hang")
    client = make_client(
        "k", host=capture.url, max_queue_size=1, flush_at=1, queue_full="block", block_timeout=0.2
    )
    client.track("u", "taken")
    capture.wait_for_requests(1)
    client.track("u", "queued")
    started = time.monotonic()
    assert client.track("u", "blocked") is None
    assert 0.15 <= time.monotonic() - started < 1.0
    assert client.stats.dropped == {"queue_full": 1}


def test_caller_mutation_after_the_call_does_not_change_what_is_sent(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """The message is encoded at call time; later changes to the caller's dict are not sent."""
    client = make_client("k", host=capture.url)
    properties = {"state": "before"}
    client.track("u", "E", properties)
    properties["state"] = "after"
    assert client.flush(5)
    assert capture.delivered()[0]["properties"] == {"state": "before"}


def test_sync_mode_sends_on_the_calling_thread_with_retries(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """sync=True delivers before the call returns, retrying like the workers do."""
    capture.script(Reply(503))
    client = make_client("k", host=capture.url, sync=True, **FAST)
    mid = client.track("u", "E")
    assert mid is not None
    assert capture.delivered_ids() == [mid]
    assert len(capture.requests) == 2
    assert threading.active_count() == threading.active_count()  # no worker was needed
    assert not client._workers.started
    stats = client.stats
    assert (stats.delivered, stats.retries) == (1, 1)


def test_sync_mode_returns_none_when_dropped(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """In sync mode a message the server refuses makes the call return None."""
    capture.script(Reply(400))
    client = make_client("k", host=capture.url, sync=True)
    assert client.track("u", "E") is None
    assert client.stats.dropped == {"rejected": 1}


def test_send_false_validates_counts_and_sends_nothing(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """send=False returns ids and counts, and never touches the network."""
    client = make_client("k", host=capture.url, send=False)
    assert client.track("u", "E") is not None
    with pytest.raises(trackline.InvalidMessage):
        client.track("u", None)
    assert client.flush(1)
    assert capture.requests == []
    assert client.stats.dropped == {"send_disabled": 1}


def test_calls_after_shutdown_are_dropped_as_closed(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """After shutdown a call returns None and counts `closed`; shutdown is idempotent."""
    client = make_client("k", host=capture.url)
    client.shutdown()
    assert client.shutdown() is True
    assert client.track("u", "E") is None
    assert client.stats.dropped == {"closed": 1}


def test_context_manager_flushes_on_exit(capture: CaptureServer) -> None:
    """Leaving a `with Client(...)` block delivers what was tracked inside it."""
    with trackline.Client("k", host=capture.url) as client:
        client.track("u", "E")
    assert len(capture.delivered()) == 1


def test_eight_threads_deliver_every_message_once(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """8 threads x 2,500 calls deliver 20,000 unique messages."""
    client = make_client("k", host=capture.url, max_queue_size=20_000)
    ids: list[list[str | None]] = [[] for _ in range(8)]

    def produce(slot: list[str | None]) -> None:
        for index in range(2500):
            slot.append(client.track("u", "E", {"i": index}))

    threads = [threading.Thread(target=produce, args=(slot,)) for slot in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(20)
    sent = [mid for slot in ids for mid in slot]
    assert None not in sent
    delivered = capture.delivered_ids()
    assert len(delivered) == 20_000
    assert set(delivered) == set(sent)
    assert_accounted(client.stats)


def test_light_traffic_keeps_a_single_worker(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Batches that one worker keeps up with start no second thread."""
    client = make_client("k", host=capture.url, workers=4, flush_at=10, flush_interval=0.05)
    for _ in range(5):
        for _ in range(10):
            client.track("u", "E")
        assert client.flush(5)
    assert len(client._workers._threads) == 1


def test_a_backlog_puts_several_requests_in_flight(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Under backlog up to `workers` requests overlap, and each message is delivered once."""
    capture.default = Reply(delay=0.2)
    client = make_client(
        "k",
        host=capture.url,
        workers=3,
        flush_at=100,
        flush_interval=60.0,
        gzip=False,
        max_queue_size=20_000,
    )
    ids = [client.track("u", "E", {"pad": "x" * 400}) for _ in range(6000)]
    assert client.flush(10)
    assert sorted(capture.delivered_ids()) == sorted(ids)
    assert len(client._workers._threads) == 3
    spans = sorted((r.at, r.at + 0.2) for r in capture.requests)
    overlapping = sum(b[0] < a[1] for a, b in itertools.pairwise(spans))
    assert overlapping >= 2, "requests should overlap in time with three workers"
    assert_accounted(client.stats)


def test_a_backlog_behind_a_failing_api_keeps_one_request_in_flight(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """While the API answers 503, a backlog starts no second request: more would only load a
    struggling API and hold more batches in memory. Once it answers, everything goes, once."""
    capture.default = Reply(503, delay=0.02)
    client = make_client(
        "k",
        host=capture.url,
        workers=3,
        flush_at=100,
        max_queue_size=20_000,
        max_retries=1000,
        **FAST,
    )
    ids = [client.track("u", "E", {"pad": "x" * 400}) for _ in range(3000)]
    assert len(capture.wait_for_requests(15)) >= 15
    assert capture.most_in_progress == 1
    capture.default = Reply(200)
    assert client.flush(10)
    assert sorted(capture.delivered_ids()) == sorted(ids)
    assert_accounted(client.stats)


def test_proxy_is_used_for_every_request(capture: CaptureServer, make_client: MakeClient) -> None:
    """With `proxy`, requests go to the proxy in absolute form for the configured host."""
    client = make_client("k", host="http://analytics.example.invalid", proxy=capture.url)
    client.track("u", "E")
    assert client.flush(5)
    [request] = capture.requests
    assert request.path == "http://analytics.example.invalid/v1/batch"
    assert request.batch[0]["event"] == "E"
