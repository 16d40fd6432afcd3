"""Webhook destinations against real receivers on 127.0.0.1 answering as scripted: bodies,
headers and signatures; retries on 5xx, 429 with Retry-After, timeouts; 4xx failing at once;
a receiver that is down, then up; one user's events in order; destinations independent."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.collector.conftest import Http, message
from tests.collector.destinations.conftest import (
    FAST,
    deliveries,
    destinations,
    drained,
    events,
    fail_first,
    hook_events,
    hook_ids,
    post,
    wait_until,
    webhook,
)
from tests.support.capture import CaptureServer, Reply
from trackline.collector import RunningCollector, serve

Start = Callable[..., tuple[RunningCollector, Http]]


def test_each_event_is_posted_once_as_an_object_with_its_keys(
    start: Start, hook: CaptureServer
) -> None:
    """batch_size 1: one POST per event, the stored message as a JSON object, with
    Idempotency-Key (its messageId), a valid X-Signature and the configured headers."""
    _, http = start(destinations(webhook("Hook", hook, secret="s3cret", headers={"X-Team": "web"})))
    post(http, events(1, 2, 3))
    drained(http)
    assert sorted(hook_ids(hook)) == ["message-1", "message-2", "message-3"]
    for request in hook.requests:
        event = orjson.loads(request.body)
        assert isinstance(event, dict)
        assert request.headers["idempotency-key"] == event["messageId"]
        assert request.headers["x-team"] == "web"
        assert request.headers["content-type"] == "application/json"
        digest = hmac.new(b"s3cret", request.raw, hashlib.sha256).hexdigest()
        assert request.headers["x-signature"] == f"sha256={digest}"
        assert event["receivedAt"]


def test_batches_are_json_arrays_of_at_most_batch_size(start: Start, hook: CaptureServer) -> None:
    _, http = start(destinations(webhook("Hook", hook, batch_size=4)))
    post(http, events(*range(10)))
    drained(http)
    bodies = [orjson.loads(request.body) for request in hook.requests]
    assert all(isinstance(body, list) and 1 <= len(body) <= 4 for body in bodies)
    assert sorted(hook_ids(hook)) == sorted(f"message-{n}" for n in range(10))
    assert "x-signature" not in hook.requests[0].headers


def test_a_burst_of_5xx_is_retried_until_delivered(start: Start, hook: CaptureServer) -> None:
    hook.script(Reply(500), Reply(503), Reply(502))
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1))
    table = drained(http)
    assert hook_ids(hook) == ["message-1"]
    assert [request.status for request in hook.requests] == [500, 503, 502, 200]
    assert table["Hook"]["delivered"] == 1
    assert table["Hook"]["last_error"].startswith("HTTP 502")
    assert deliveries(http, "message-1")["Hook"]["attempts"] == 4


def test_429_with_retry_after_is_honoured(start: Start, hook: CaptureServer) -> None:
    """No request reaches the receiver before the Retry-After it asked for has passed."""
    hook.script(Reply(429, headers={"Retry-After": "1"}))
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1))
    drained(http)
    first, second = hook.requests
    assert second.at - first.at >= 1.0
    assert hook_ids(hook) == ["message-1"]


def test_a_4xx_fails_the_job_at_once_and_keeps_it_as_a_dead_letter(
    start: Start, hook: CaptureServer
) -> None:
    hook.rule = lambda body: Reply(400, body=b'{"error":"bad"}') if b"message-2" in body else None
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1, 2, 3))
    table = drained(http)
    assert (table["Hook"]["delivered"], table["Hook"]["failed"]) == (2, 1)
    dead = deliveries(http, "message-2")["Hook"]
    assert (dead["status"], dead["attempts"]) == ("failed", 1)
    assert dead["last_error"] == 'HTTP 400: {"error":"bad"}'
    assert sum(b"message-2" in request.body for request in hook.requests) == 1


def test_408_is_retried_like_a_5xx(start: Start, hook: CaptureServer) -> None:
    hook.script(Reply(408))
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1))
    drained(http)
    assert hook_ids(hook) == ["message-1"]


def test_a_receiver_that_never_answers_times_out_and_is_retried(
    start: Start, hook: CaptureServer
) -> None:
    hook.script(Reply(action="hang"))
    _, http = start(destinations(webhook("Hook", hook, **{**FAST, "timeout": 0.3})))
    post(http, events(1))
    drained(http)
    assert hook_ids(hook) == ["message-1"]
    assert deliveries(http, "message-1")["Hook"]["attempts"] == 2


def test_a_destination_that_is_down_waits_then_drains_when_it_is_back(start: Start) -> None:
    """While nothing listens, jobs wait without burning their attempts; once the receiver
    is back on its port, everything is delivered."""
    with CaptureServer() as probe:
        port = int(probe.url.rsplit(":", 1)[1])
        url = probe.url
    config = {"name": "Hook", "kind": "webhook", "url": url + "/hook", **FAST}
    _, http = start(destinations(config))
    post(http, events(*range(20)))
    wait_until(lambda: http.get("/api/destinations").json[0]["down"], what="marked down")
    with CaptureServer(port=port) as back:
        table = drained(http)
        assert sorted(hook_ids(back)) == sorted(f"message-{n}" for n in range(20))
    assert table["Hook"]["failed"] == 0
    attempts = [deliveries(http, f"message-{n}")["Hook"]["attempts"] for n in range(20)]
    # Only the sends before the destination counted as down cost attempts.
    assert max(attempts) <= 4


def test_one_users_events_arrive_in_stored_order_while_one_is_retried(
    start: Start, hook: CaptureServer
) -> None:
    """alice's first event fails twice: her later events wait for it; bob's go on."""
    fail_first(hook, 2)
    _, http = start(destinations(webhook("Hook", hook, concurrency=2, **FAST)))
    batch = [
        *events(0, 1, 2, userId="alice"),
        *events(3, 4, userId="bob"),
        *events(5, userId="alice"),
    ]
    post(http, batch)
    drained(http)
    delivered = hook_events(hook)
    alice = [e["messageId"] for e in delivered if e["userId"] == "alice"]
    assert alice == ["message-0", "message-1", "message-2", "message-5"]
    bob = [e["messageId"] for e in delivered if e["userId"] == "bob"]
    assert bob == ["message-3", "message-4"]


def test_a_dead_destination_holds_up_neither_another_nor_ingest(
    start: Start, hook: CaptureServer
) -> None:
    with CaptureServer() as black_hole:
        black_hole.default = Reply(action="hang")
        _, http = start(
            destinations(
                webhook("Slow", black_hole, **{**FAST, "timeout": 5.0}),
                webhook("Hook", hook, batch_size=10),
            )
        )
        for start_at in range(0, 100, 20):
            post(http, events(*range(start_at, start_at + 20)))
        wait_until(lambda: len(hook_ids(hook)) == 100, what="the healthy destination")
        table = http.get("/api/destinations").json
        slow = next(row for row in table if row["name"] == "Slow")
        assert slow["delivered"] == 0
        assert slow["pending"] + slow["retrying"] == 100


def test_a_batch_answered_413_is_split(start: Start) -> None:
    with CaptureServer(max_body=3000) as small:
        big: dict[str, Any] = {"properties": {"blob": "x" * 1200}}
        _, http = start(destinations(webhook("Hook", small, batch_size=8, **FAST)))
        post(http, events(*range(8), **big))
        drained(http)
        assert sorted(hook_ids(small)) == sorted(f"message-{n}" for n in range(8))


def test_a_split_batch_whose_first_half_is_retried_holds_back_the_rest(start: Start) -> None:
    """A 413 splits alice's batch; its first part fits but is answered 500: the parts after it
    are not sent until it is delivered, so her events arrive in stored order."""
    with CaptureServer(max_body=3000) as small:
        failures = fail_first(small, 1, within=3000)
        big: dict[str, Any] = {"userId": "alice", "properties": {"blob": "x" * 1200}}
        _, http = start(destinations(webhook("Hook", small, batch_size=8, **FAST)))
        post(http, events(*range(8), **big))
        drained(http)
        assert hook_ids(small) == [f"message-{n}" for n in range(8)]
        assert failures["left"] == 0
        assert deliveries(http, "message-7")["Hook"]["attempts"] == 1


def test_workers_share_a_queue_of_many_users(
    start: Start, hook: CaptureServer, tmp_path: Path
) -> None:
    """Two thousand events of a thousand users, queued at once (a replay), for four workers
    sending batches of 100: each worker claims a share, so all four have a request in
    flight together, rather than one claim holding every user and the others idle."""
    with serve(tmp_path / "events.sqlite3") as earlier:
        for at in range(0, 2000, 100):
            post(
                Http(earlier.url),
                [message(n, userId=f"user-{n % 1000}") for n in range(at, at + 100)],
            )
    hook.gate.clear()
    patient = {**FAST, "timeout": 30.0}  # nothing times out while the answers are held
    _, http = start(destinations(webhook("Hook", hook, batch_size=100, concurrency=4, **patient)))
    assert http.post("/api/destinations/Hook/replay", None, raw=b"").json["queued"] == 2000
    try:
        wait_until(lambda: hook.in_progress == 4, 10.0, "four requests in flight at once")
    finally:
        hook.gate.set()
    drained(http)
    assert sorted(hook_ids(hook)) == sorted(f"message-{n}" for n in range(2000))
