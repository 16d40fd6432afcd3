"""Durable mode in one process: committed before the call returns, deleted after delivery, kept
across shutdown and outages, sent first after a restart, bounded by size and age."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import trackline
from tests.support.capture import CaptureServer, Reply
from tests.support.spool_support import message_id, returned_ids, run_child, spool_rows
from trackline.config import resolve_spool

MakeClient = Callable[..., trackline.Client]
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "flush_interval": 0.02}


def assert_accounted(stats: trackline.Stats) -> None:
    assert stats.unaccounted == 0, stats


def test_each_message_is_in_the_spool_file_when_the_call_returns(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """A process that ends abruptly right after its calls returned (no shutdown, no exit
    hook, server down) leaves every one of those messages as a committed row."""
    capture.default = Reply(503)
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    run_child(spool, capture.url, ids, "--count", "40", "--crash")
    rows = spool_rows(spool)
    assert len(returned_ids(ids)) == 40
    assert [message_id(data) for _, data in rows] == returned_ids(ids)


def test_delivered_messages_are_deleted_from_the_file(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """Once flush() returned, the delivered rows are gone from disk: a crash right then
    leaves an empty spool file, and nothing is sent again by the next process."""
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    run_child(spool, capture.url, ids, "--count", "250", "--flush", "--crash")
    assert capture.delivered_ids() == returned_ids(ids)
    assert len(list(spool.glob("spool-*.sqlite"))) == 1
    assert spool_rows(spool) == []


def test_sync_mode_commits_then_sends_then_deletes(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """With sync=True each call is spooled, sent on the calling thread and deleted on 2xx."""
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    run_child(spool, capture.url, ids, "--count", "5", "--sync", "--crash")
    assert capture.delivered_ids() == returned_ids(ids)
    assert len(returned_ids(ids)) == 5
    assert spool_rows(spool) == []


def test_an_empty_spool_leaves_no_file_after_shutdown(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """A clean shutdown with everything delivered removes the spool file and its lock."""
    client = make_client("k", host=capture.url, spool=tmp_path, workers=1, **FAST)
    ids = [client.track("u", "Sent", {"index": index}) for index in range(250)]
    assert client.flush(5)
    assert capture.delivered_ids() == ids
    assert client.shutdown(5)
    assert sorted(os.listdir(tmp_path)) == []
    stats = client.stats
    assert (stats.enqueued, stats.delivered, stats.queued) == (250, 250, 0)
    assert_accounted(stats)


def test_shutdown_keeps_what_it_could_not_send_and_the_next_client_sends_it_first(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """Shutdown during an outage drops nothing: the rows stay on disk, `queued` counts them,
    and a client started later on the same spool sends them first, in order."""
    capture.default = Reply(503)
    first = make_client("k", host=capture.url, spool=tmp_path, workers=1, **FAST)
    early = [first.track("u", "Early", {"index": index}) for index in range(120)]
    assert not first.shutdown(0.3)
    assert len(spool_rows(tmp_path)) == 120
    stats = first.stats
    assert (stats.enqueued, stats.delivered, stats.queued, stats.in_flight) == (120, 0, 120, 0)
    assert stats.dropped == {}

    capture.default = Reply(200)
    second = make_client("k", host=capture.url, spool=tmp_path, workers=1, **FAST)
    found = second.stats  # its worker may already be sending them
    assert (found.enqueued, found.queued + found.in_flight + found.delivered) == (120, 120)
    late = [second.track("u", "Late", {"index": index}) for index in range(30)]
    assert second.flush(5)
    assert capture.delivered_ids() == early + late
    stats = second.stats
    assert (stats.enqueued, stats.delivered, stats.queued) == (150, 150, 0)
    assert_accounted(stats)


def test_an_outage_longer_than_the_memory_queue_holds_loses_nothing(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """With a memory bound of 50 messages, 600 messages tracked during an outage that outlasts
    every retry are all delivered once it ends: nothing dropped, given-back batches first."""
    capture.default = Reply(503)
    client = make_client(
        "k",
        host=capture.url,
        spool=tmp_path,
        max_queue_size=50,
        max_retries=1,
        workers=1,
        **FAST,
    )
    ids = [client.track("u", "Outage", {"index": index}) for index in range(600)]
    assert None not in ids
    capture.wait_for_requests(6)
    assert not client.flush(0.3)
    assert client.stats.dropped == {}
    capture.default = Reply(200)
    assert client.flush(10)
    delivered = capture.delivered_ids()
    assert sorted(delivered) == sorted(ids)
    assert delivered == ids
    stats = client.stats
    assert (stats.delivered, stats.dropped_total, stats.queued) == (600, 0, 0)
    assert_accounted(stats)


def test_several_workers_deliver_every_message_once(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """With three workers and eight calling threads, every message is delivered exactly once
    and its row deleted."""
    client = make_client("k", host=capture.url, spool=tmp_path, workers=3, flush_at=20, **FAST)
    ids: list[str | None] = []

    def calls() -> None:
        ids.extend(client.track("u", "Threads", {"index": index}) for index in range(200))

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(10)
    assert None not in ids
    assert sorted(capture.delivered_ids()) == sorted(ids)  # type: ignore[arg-type]
    assert len(set(ids)) == 1600
    assert client.shutdown(5)
    assert os.listdir(tmp_path) == []
    assert_accounted(client.stats)


def test_a_full_spool_drops_new_messages_as_spool_full(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """Past max_spool_bytes a call returns None, counts `spool_full` and tells on_error; the
    messages already spooled are delivered once the server is back."""
    errors: list[tuple[str, int]] = []
    capture.default = Reply(503)
    client = make_client(
        "k",
        host=capture.url,
        spool=tmp_path,
        max_spool_bytes=20_000,
        on_error=lambda error, messages: errors.append((error.reason, len(messages))),
        **FAST,
    )
    ids = [client.track("u", "Fill", {"pad": "x" * 200}) for _ in range(200)]
    kept = [message_id for message_id in ids if message_id is not None]
    assert 20 < len(kept) < 100
    assert ids[: len(kept)] == kept
    stats = client.stats
    assert stats.dropped == {"spool_full": 200 - len(kept)}
    assert ("spool_full", 1) in errors
    capture.default = Reply(200)
    assert client.flush(5)
    assert capture.delivered_ids() == kept
    assert client.track("u", "Room again") is not None
    assert_accounted(client.stats)


def test_messages_older_than_max_age_are_dropped_as_expired(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """Rows left on disk longer than max_age are dropped as `expired` when their turn comes,
    reported to on_error with their content, and deleted; newer ones are sent."""
    capture.default = Reply(503)
    first = make_client("k", host=capture.url, spool=tmp_path, workers=1, **FAST)
    stale = [first.track("u", "Stale", {"index": index}) for index in range(10)]
    first.shutdown(0.1)
    time.sleep(0.3)
    capture.default = Reply(200)
    expired: list[str] = []
    second = make_client(
        "k",
        host=capture.url,
        spool=tmp_path,
        max_age=0.25,
        on_error=lambda error, messages: expired.extend(
            message["messageId"] for message in messages if error.reason == "expired"
        ),
        **FAST,
    )
    fresh = second.track("u", "Fresh")
    assert second.flush(5)
    assert capture.delivered_ids() == [fresh]
    assert sorted(expired) == sorted(stale)
    stats = second.stats
    assert stats.dropped == {"expired": 10}
    assert_accounted(stats)
    second.shutdown(1)
    assert spool_rows(tmp_path) == []


def test_spool_comes_from_trackline_spool_when_not_given(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKLINE_SPOOL turns durable mode on; an argument wins over it; a path object works."""
    monkeypatch.setenv("TRACKLINE_SPOOL", str(tmp_path / "from-env"))
    assert resolve_spool(None) == str(tmp_path / "from-env")
    assert resolve_spool(tmp_path / "given") == str(tmp_path / "given")
    assert resolve_spool(None, {}) is None
    assert resolve_spool(None, {"TRACKLINE_SPOOL": ""}) is None
    client = trackline.Client("k", send=False)
    try:
        assert client.config.spool == str(tmp_path / "from-env")
        assert (tmp_path / "from-env").is_dir()
    finally:
        client.shutdown(1)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"spool": ""}, "spool"),
        ({"spool": 3}, "spool"),
        ({"max_spool_bytes": 0}, "max_spool_bytes"),
        ({"max_spool_bytes": 1.5}, "max_spool_bytes"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": "7d"}, "max_age"),
        ({"spool_synchronous": "off"}, "spool_synchronous"),
    ],
)
def test_bad_spool_option_names_itself(options: dict[str, Any], option: str) -> None:
    """Each invalid durable-mode option raises ConfigError naming it."""
    with pytest.raises(trackline.ConfigError) as info:
        trackline.Client("k", **options)
    assert info.value.option == option


@pytest.mark.parametrize(("choice", "pragma"), [("normal", 1), ("full", 2)])
def test_spool_synchronous_sets_sqlite_synchronous(
    tmp_path: pathlib.Path,
    capture: CaptureServer,
    make_client: MakeClient,
    choice: str,
    pragma: int,
) -> None:
    """The choice reaches SQLite as synchronous=NORMAL (1) or FULL (2), and both deliver."""
    client = make_client("k", host=capture.url, spool=tmp_path, spool_synchronous=choice, **FAST)
    message_id = client.track("u", "Synchronous")
    own = client._buffer._files.own  # type: ignore[attr-defined]
    assert own is not None
    assert own._db.execute("PRAGMA synchronous").fetchone() == (pragma,)
    assert client.flush(5)
    assert capture.delivered_ids() == [message_id]


def test_defaults_of_durable_mode_are_the_documented_ones(tmp_path: pathlib.Path) -> None:
    """1 GiB, 7 days and synchronous NORMAL unless told otherwise."""
    client = trackline.Client("k", spool=tmp_path, send=False)
    try:
        config = client.config
        assert (config.max_spool_bytes, config.max_age, config.spool_synchronous) == (
            1024**3,
            7 * 24 * 3600.0,
            "normal",
        )
    finally:
        client.shutdown(1)
