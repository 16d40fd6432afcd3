"""The tracking-api kind against a second trackline collector: forwarded messages keep their
messageId, timestamps and context; a refusal (wrong write key) fails the jobs at once; a
receiver that is down is waited for; one user's events arrive in stored order while a request
is retried or split, and other users' go on meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.collector.conftest import Http, message
from tests.collector.destinations.conftest import (
    FAST,
    deliveries,
    destinations,
    drained,
    events,
    fail_first,
    post,
)
from tests.support.capture import CaptureServer
from trackline.collector import RunningCollector, serve
from trackline.collector.destinations.tracking_api import LANES, forwarded, requests
from trackline.collector.store.jobs import order_key
from trackline.wire import BATCH_ROOM, MAX_BATCH_MESSAGES, batch_bytes

Start = Callable[..., tuple[RunningCollector, Http]]


def tracking_api(url: str, **settings: Any) -> dict[str, Any]:
    return {"name": "Segment", "kind": "tracking-api", "host": url, "write_key": "wk", **settings}


def test_forwarded_messages_keep_their_id_timestamps_and_context(
    start: Start, tmp_path: Path
) -> None:
    with serve(tmp_path / "target.sqlite3", write_keys=["wk"]) as target:
        _, http = start(destinations(tracking_api(target.url)))
        batch = events(
            1,
            2,
            context={"ip": "10.1.2.3", "library": {"name": "analytics-node", "version": "3"}},
            integrations={"All": True, "Mixpanel": False},
        )
        post(http, batch)
        drained(http)
        mine = {e["messageId"]: e for e in Http(http.url).events()}
        theirs = {e["messageId"]: e for e in Http(target.url).events()}
        assert sorted(theirs) == ["message-1", "message-2"]
        hop = {"receivedAt", "sentAt", "originalTimestamp"}
        for message_id, event in theirs.items():
            original = mine[message_id]
            assert event["timestamp"] == original["timestamp"]
            assert event["context"] == original["context"]
            kept = {key: value for key, value in original.items() if key not in hop}
            assert {key: value for key, value in event.items() if key not in hop} == kept
        assert deliveries(http, "message-1")["Segment"]["status"] == "delivered"


def test_a_hop_leaves_out_only_the_fields_it_sets_itself() -> None:
    body = orjson.dumps(
        {
            "messageId": "m",
            "timestamp": "2026-11-28T14:00:00.000Z",
            "originalTimestamp": "2026-11-28T14:00:01.000Z",
            "sentAt": "2026-11-28T14:00:02.000Z",
            "receivedAt": "2026-11-28T14:00:03.000Z",
            "context": {"ip": "1.2.3.4"},
        }
    ).decode()
    assert orjson.loads(forwarded(body)) == {
        "messageId": "m",
        "timestamp": "2026-11-28T14:00:00.000Z",
        "originalTimestamp": "2026-11-28T14:00:01.000Z",
        "context": {"ip": "1.2.3.4"},
    }


def test_a_wrong_write_key_fails_the_jobs_at_once(start: Start, tmp_path: Path) -> None:
    with serve(tmp_path / "target.sqlite3", write_keys=["another"]) as target:
        _, http = start(destinations(tracking_api(target.url, **FAST)))
        post(http, events(1))
        table = drained(http)
        assert table["Segment"]["failed"] == 1
        failed = deliveries(http, "message-1")["Segment"]
        assert (failed["status"], failed["attempts"]) == ("failed", 1)
        assert "unauthorized" in failed["last_error"]


def test_a_target_that_is_down_is_waited_for(start: Start, tmp_path: Path) -> None:
    with serve(tmp_path / "probe.sqlite3") as probe:
        url, port = probe.url, probe.port
    _, http = start(destinations(tracking_api(url, **{**FAST, "timeout": 1.0})))
    post(http, events(1, 2, 3))
    with serve(tmp_path / "target.sqlite3", port=port) as target:
        drained(http, timeout=60)
        assert sorted(e["messageId"] for e in Http(target.url).events()) == [
            "message-1",
            "message-2",
            "message-3",
        ]


@given(st.lists(st.integers(1, BATCH_ROOM + 10), max_size=60), st.integers(0, 3000))
def test_a_send_is_cut_into_the_requests_the_engine_makes(sizes: list[int], small: int) -> None:
    """Runs cover the bodies in order; each is one batch of the engine (within the batch room
    and message count, or a single message), and the next body would not have fitted."""
    bodies = [b"x" * size for size in sizes] + [b"y"] * small
    runs = list(requests(bodies))
    assert [index for start, end in runs for index in range(start, end)] == list(range(len(bodies)))
    for start, end in runs:
        size = sum(map(len, bodies[start:end]))
        assert end - start == 1 or batch_bytes(size, end - start) <= BATCH_ROOM
        assert end - start <= MAX_BATCH_MESSAGES
        if end < len(bodies) and end - start < MAX_BATCH_MESSAGES:
            assert batch_bytes(size + len(bodies[end]), end + 1 - start) > BATCH_ROOM


def arrived(server: CaptureServer) -> list[str]:
    """The messageIds a Tracking API receiver accepted, in the order its answers were given."""
    return [
        message["messageId"]
        for request in list(server.requests)
        if request.status == 200
        for message in request.batch
    ]


def replayed(
    start: Start, tmp_path: Path, users: list[str], receiver: CaptureServer
) -> tuple[int, Http]:
    """Events 0, 1, ... of `users` (one each, in turn), stored by a collector with no
    destination, then replayed by one forwarding to `receiver`: they go out in sends of
    several requests' worth. The number of events and the second collector."""
    count = len(users)
    with serve(tmp_path / "events.sqlite3") as earlier:
        for at in range(0, count, 100):
            batch = [
                message(n, userId=users[n], properties={"pad": "x" * 2000})
                for n in range(at, min(at + 100, count))
            ]
            post(Http(earlier.url), batch)
    _, http = start(destinations(tracking_api(receiver.url, gzip=False, **FAST)))
    assert http.post("/api/destinations/Segment/replay", None, raw=b"").json["queued"] == count
    return count, http


@pytest.mark.parametrize("fault", ["retried", "given up", "split"])
def test_one_users_events_arrive_in_stored_order(start: Start, tmp_path: Path, fault: str) -> None:
    """A thousand of alice's events, replayed from the store, go out in one send of several
    requests' worth; the first request is answered 500 once (retried), or every request over
    100 KB 413 (split in halves). Her events still arrive in the order they were stored: no
    later request overtakes one held up. Answered 500 four times, the first request is given
    up by the client's own retries: the rest of the send is held back unsent until the router
    has retried it."""
    limit = 100_000 if fault == "split" else None
    with CaptureServer(max_body=limit) as receiver:
        fail_first(receiver, {"retried": 1, "given up": 4, "split": 0}[fault])
        count, http = replayed(start, tmp_path, ["alice"] * 1000, receiver)
        drained(http, timeout=60)
        order = arrived(receiver)
        assert sorted(order) == sorted(f"message-{n}" for n in range(count))
        assert order == [f"message-{n}" for n in range(count)]
        statuses = {request.status for request in receiver.requests}
        assert statuses >= ({413} if fault == "split" else {500})
        if fault == "given up":
            assert deliveries(http, "message-0")["Segment"]["attempts"] == 2
            assert deliveries(http, f"message-{count - 1}")["Segment"]["attempts"] == 1


def test_another_users_events_go_on_while_one_request_waits_for_a_retry(
    start: Start, tmp_path: Path
) -> None:
    """alice's and bob's events, interleaved, go out in one send through different lanes;
    alice's first request is given up by the client's retries and waits for the router's.
    bob's events are delivered meanwhile at their first attempt, and each user's arrive in
    stored order."""
    assert order_key("alice", None) % LANES != order_key("bob", None) % LANES
    users = ["alice", "bob"] * 200
    with CaptureServer() as receiver:
        failures = fail_first(receiver, 4)
        count, http = replayed(start, tmp_path, users, receiver)
        drained(http, timeout=60)
        order = arrived(receiver)
        for user in ("alice", "bob"):
            mine = [f"message-{n}" for n in range(count) if users[n] == user]
            assert [message_id for message_id in order if message_id in mine] == mine
        assert failures["left"] == 0
        assert deliveries(http, "message-0")["Segment"]["attempts"] == 2
        assert {
            deliveries(http, f"message-{n}")["Segment"]["attempts"] for n in range(1, count, 2)
        } == {1}
