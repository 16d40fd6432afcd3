"""The read and replay API of destinations: the destinations table, one event's deliveries,
replays of dead letters and backfills, unroutable events counted and visible."""

from __future__ import annotations

from collections.abc import Callable

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import (
    FAST,
    deliveries,
    destinations,
    drained,
    events,
    hook_ids,
    post,
    webhook,
)
from tests.support.capture import CaptureServer, Reply
from trackline.collector import RunningCollector

Start = Callable[..., tuple[RunningCollector, Http]]
KEYS = {
    "name",
    "kind",
    "enabled",
    "down",
    "delivered",
    "pending",
    "retrying",
    "failed",
    "last_error",
    "last_error_at",
    "last_success_at",
}


def test_the_destinations_table_lists_every_configured_destination(
    start: Start, hook: CaptureServer
) -> None:
    _, http = start(
        destinations(
            webhook("Hook", hook),
            {"name": "Off", "kind": "file", "path": "x", "enabled": False},
        )
    )
    table = http.get("/api/destinations").json
    assert [row["name"] for row in table] == ["Hook", "Off"]
    assert all(set(row) == KEYS for row in table)
    assert table[1]["enabled"] is False
    post(http, events(1, 2))
    after = drained(http)
    assert (after["Hook"]["delivered"], after["Hook"]["pending"]) == (2, 0)
    assert after["Off"]["delivered"] == after["Off"]["pending"] == 0


def test_a_collector_without_destinations_lists_none(start: Start) -> None:
    _, http = start([])
    assert http.get("/api/destinations").json == []
    post(http, events(1))
    assert http.get("/api/events/message-1/deliveries").json == []


def test_deliveries_of_an_unknown_event_is_404(start: Start, hook: CaptureServer) -> None:
    _, http = start(destinations(webhook("Hook", hook)))
    answer = http.get("/api/events/nope/deliveries")
    assert answer.status == 404
    assert answer.json["code"] == "not_found"


def test_deliveries_show_each_destination_the_event_went_to(
    start: Start, hook: CaptureServer
) -> None:
    with CaptureServer() as other:
        _, http = start(destinations(webhook("Hook", hook), webhook("Other", other)))
        post(http, events(1, integrations={"Other": False}))
        drained(http)
        (row,) = http.get("/api/events/message-1/deliveries").json
        assert set(row) == {"destination", "status", "attempts", "last_error", "delivered_at"}
        assert (row["destination"], row["status"], row["attempts"]) == ("Hook", "delivered", 1)
        assert row["delivered_at"].endswith("Z")


def test_an_event_with_malformed_integrations_is_stored_counted_and_routed_nowhere(
    start: Start, hook: CaptureServer
) -> None:
    _, http = start(destinations(webhook("Hook", hook)))
    result = post(http, events(1, integrations=["Hook"]) + events(2, integrations={"All": "no"}))
    assert result["accepted"] == 2
    assert http.get("/api/stats").json["unroutable"] == 2
    assert http.get("/api/events/message-1/deliveries").json == []


def test_replaying_dead_letters_sends_them_again(start: Start, hook: CaptureServer) -> None:
    hook.script(Reply(400))
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1))
    assert drained(http)["Hook"]["failed"] == 1
    answer = http.post("/api/destinations/Hook/replay?failed=1", None, raw=b"")
    assert answer.status == 200, answer.body
    assert answer.json == {"destination": "Hook", "queued": 1}
    table = drained(http)
    assert (table["Hook"]["failed"], table["Hook"]["delivered"]) == (0, 1)
    assert deliveries(http, "message-1")["Hook"]["status"] == "delivered"


def test_a_replay_backfills_a_destination_added_later(start: Start, hook: CaptureServer) -> None:
    running, http = start([])
    post(http, events(1, 2) + events(3, integrations={"Hook": False}))
    running.stop()
    _, http = start(destinations(webhook("Hook", hook)))
    answer = http.post("/api/destinations/Hook/replay", None, raw=b"")
    assert answer.json == {"destination": "Hook", "queued": 2}
    drained(http)
    assert sorted(hook_ids(hook)) == ["message-1", "message-2"]


def test_a_replay_since_keeps_recent_events(start: Start, hook: CaptureServer) -> None:
    running, http = start([])
    post(http, events(1))
    running.stop()
    _, http = start(destinations(webhook("Hook", hook)))
    future = "2999-01-01T00:00:00Z"
    answer = http.post(f"/api/destinations/Hook/replay?since={future}", None, raw=b"")
    assert answer.json["queued"] == 0


def test_a_replay_of_an_unknown_destination_is_404(start: Start) -> None:
    _, http = start([])
    answer = http.post("/api/destinations/Nope/replay", None, raw=b"")
    assert answer.status == 404


def test_a_replay_from_another_sites_page_is_refused(start: Start, hook: CaptureServer) -> None:
    """A replay changes what the collector does: a page on another origin cannot ask for it."""
    hook.script(Reply(400))
    _, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1))
    drained(http)
    answer = http.request(
        "POST", "/api/destinations/Hook/replay?failed=1", b"", {"Origin": "http://evil.example"}
    )
    assert answer.status == 403
    assert answer.json["code"] == "forbidden_origin"
    assert http.get("/api/destinations").json[0]["failed"] == 1
