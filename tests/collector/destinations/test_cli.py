"""`trackline destinations` and `trackline replay` against a running collector."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import (
    FAST,
    destinations,
    drained,
    events,
    post,
    webhook,
)
from tests.support.capture import CaptureServer, Reply
from trackline.cli import main
from trackline.collector import RunningCollector

Start = Callable[..., tuple[RunningCollector, Http]]


def test_destinations_prints_the_table(
    start: Start, hook: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hook.script(Reply(400, body=b"nope"))
    running, http = start(
        destinations(
            webhook("Hook", hook, **FAST),
            {"name": "Archive", "kind": "file", "path": "x", "enabled": False},
        )
    )
    post(http, events(1, 2))
    drained(http)
    assert main(["destinations", "--host", running.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "KIND",
        "DELIVERED",
        "PENDING",
        "RETRYING",
        "FAILED",
        "LAST",
        "SUCCESS",
        "LAST",
        "ERROR",
    ]
    hook_row = next(line for line in lines if line.startswith("Hook"))
    assert hook_row.split()[:6] == ["Hook", "webhook", "1", "0", "0", "1"]
    assert hook_row.endswith("HTTP 400: nope")
    assert any(line.startswith("Archive") and "file (off)" in line for line in lines)


def test_destinations_as_json(
    start: Start, hook: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running, _ = start(destinations(webhook("Hook", hook)))
    assert main(["destinations", "--host", running.url, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "Hook"


def test_replay_of_dead_letters(
    start: Start, hook: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hook.script(Reply(400), Reply(400))
    running, http = start(destinations(webhook("Hook", hook, **FAST)))
    post(http, events(1, 2, 3))
    assert drained(http)["Hook"]["failed"] == 2
    assert main(["replay", "--destination", "Hook", "--failed", "--host", running.url]) == 0
    assert capsys.readouterr().out == "queued 2 dead letters for Hook\n"
    table = drained(http)
    assert (table["Hook"]["delivered"], table["Hook"]["failed"]) == (3, 0)


def test_replay_since_an_age(
    start: Start, hook: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running, http = start(destinations(webhook("Hook", hook)))
    post(http, events(1, 2))
    drained(http)
    assert main(["replay", "--destination", "Hook", "--since", "1h", "--host", running.url]) == 0
    assert capsys.readouterr().out == "queued 2 events for Hook\n"
    assert drained(http)["Hook"]["delivered"] == 4


def test_replay_of_an_unknown_destination_fails_with_a_line(
    start: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    running, _ = start([])
    assert main(["replay", "--destination", "Nope", "--host", running.url]) == 1
    err = capsys.readouterr().err
    assert err == (
        "trackline replay: the collector answered 404: no destination named 'Nope' is configured\n"
    )


def test_commands_take_the_read_token(
    start: Start,
    hook: CaptureServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a collector started with a read token, both commands show it (`--read-token`,
    else TRACKLINE_READ_TOKEN); without it the collector's refusal is the one line."""
    token = "destinations-read-token-0123"
    running, http = start(destinations(webhook("Hook", hook)), read_token=token)
    http.pool.headers = {"Authorization": f"Bearer {token}"}
    post(http, events(1, 2))
    drained(http)
    assert main(["destinations", "--host", running.url]) == 1
    assert capsys.readouterr().err.startswith("trackline destinations: the collector answered 401")
    assert main(["destinations", "--host", running.url, "--read-token", token]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["Hook", "webhook", "2"]
    assert main(["replay", "--destination", "Hook", "--host", running.url]) == 1
    assert capsys.readouterr().err.startswith("trackline replay: the collector answered 401")
    monkeypatch.setenv("TRACKLINE_READ_TOKEN", token)
    assert main(["replay", "--destination", "Hook", "--host", running.url]) == 0
    assert capsys.readouterr().out == "queued 2 events for Hook\n"
    assert drained(http)["Hook"]["delivered"] == 4


def test_commands_say_when_no_collector_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["destinations", "--host", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the collector" in capsys.readouterr().err
