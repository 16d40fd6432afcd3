"""The tracking-api kind against a second trackline collector: forwarded messages keep their
messageId, timestamps and context; a refusal (wrong write key) fails the jobs at once; a
receiver that is down is waited for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import (
    FAST,
    deliveries,
    destinations,
    drained,
    events,
    post,
)
from trackline.collector import RunningCollector, serve
from trackline.collector.destinations.tracking_api import forwarded

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
