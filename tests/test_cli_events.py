"""`trackline events`: querying and following a collector running in-process."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import trackline
from trackline.cli import _event_table, main
from trackline.cli.events import parse_since
from trackline.collector import RunningCollector, serve


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[RunningCollector]:
    """A collector on a free loopback port with the seed's examples stored."""
    with serve(tmp_path / "events.sqlite3") as running:
        with trackline.Client("events-key", host=running.url, sync=True) as client:
            client.identify("019mr8mf4r", {"name": "Tom", "email": "tom@initech.com"})
            client.track("019mr8mf4r", "Item Purchased", {"revenue": 39.95})
            client.page(None, "Login", {"path": "/login"}, category="Auth", anonymous_id="a-1")
            client.track("someone-else", "Item Purchased", {"revenue": 5})
            client.alias("anonymous_user", "identified@gmail.com")
        yield running


def events(collector: RunningCollector, *argv: str) -> int:
    return main(["events", "--host", collector.url, *argv])


def test_the_newest_events_are_listed_oldest_first_as_a_table(
    collector: RunningCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header, then one row per event in the order they arrived."""
    assert events(collector) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "TYPE", "USER", "EVENT", "/", "NAME", "DETAILS"]
    assert [line.split()[2] for line in lines[1:]] == [
        "identify",
        "track",
        "page",
        "track",
        "alias",
    ]
    assert "anon:a-1" in lines[3]
    assert "Auth / Login" in lines[3]
    assert '{"revenue":39.95}' in lines[2]
    assert "from anonymous_user" in lines[5]


@pytest.mark.parametrize(
    ("argv", "users"),
    [
        (["--type", "track"], ["019mr8mf4r", "someone-else"]),
        (["--user-id", "019mr8mf4r"], ["019mr8mf4r", "019mr8mf4r"]),
        (["--anonymous-id", "a-1"], ["anon:a-1"]),
        (["--event", "Login"], ["anon:a-1"]),
        (["-q", "INITECH.COM"], ["019mr8mf4r"]),
        (["--limit", "2"], ["someone-else", "identified@gmail.com"]),
        (
            ["--since", "1h"],
            ["019mr8mf4r", "019mr8mf4r", "anon:a-1", "someone-else", "identified@gmail.com"],
        ),
    ],
)
def test_filters_are_those_of_the_collector(
    collector: RunningCollector,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    users: list[str],
) -> None:
    """type, user, anonymous id, event, text search, age and limit select the rows."""
    assert events(collector, *argv) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[3] for row in rows] == users


def test_no_match_says_so(collector: RunningCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty result prints a line saying there is nothing, and exits 0."""
    assert events(collector, "--user-id", "nobody") == 0
    assert capsys.readouterr().out == "(no events)\n"


def test_json_output_can_be_imported_again(
    collector: RunningCollector, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the stored messages one per line: a file `trackline import` takes back."""
    assert events(collector, "--json", "--type", "track") == 0
    dump = tmp_path / "dump.jsonl"
    dump.write_text(capsys.readouterr().out, encoding="utf-8")
    messages = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [m["event"] for m in messages] == ["Item Purchased", "Item Purchased"]
    with serve(tmp_path / "copy.sqlite3") as copy:
        argv = ["import", str(dump), "--host", copy.url, "--write-key", "k", "--no-progress"]
        assert main(argv) == 0
        assert main(["events", "--host", copy.url, "--json"]) == 0
    copied = [json.loads(line) for line in capsys.readouterr().out.splitlines()[1:]]
    assert [m["messageId"] for m in copied] == [m["messageId"] for m in messages]
    # The copy's timestamp is skew-corrected again on arrival; what was sent is kept as-is.
    assert [m["originalTimestamp"] for m in copied] == [m["timestamp"] for m in messages]


def test_an_unreachable_collector_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: exit 1 and a hint to start the collector."""
    with serve(":memory:") as running:
        url = running.url
    assert main(["events", "--host", url]) == 1
    assert "is `trackline collector` running?" in capsys.readouterr().err


def test_a_refused_query_shows_the_collector_message(
    collector: RunningCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """The collector's own explanation of a bad parameter reaches the user."""
    assert events(collector, "--limit", "0") == 1
    assert "the collector answered 400: limit must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["yesterday", "10 minutes"])
def test_a_bad_since_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--since must be an ISO time or an age like 10m."""
    assert main(["events", "--since", value]) == 2
    assert "--since:" in capsys.readouterr().err


def test_since_ages_count_back_from_now() -> None:
    """30s, 10m, 2h, 7d are ages; an ISO time passes through unchanged."""
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    assert parse_since("10m", now) == "2026-11-28T11:50:00.000Z"
    assert parse_since("7d", now) == "2026-11-21T12:00:00.000Z"
    assert parse_since("1.5h", now) == "2026-11-28T10:30:00.000Z"
    assert parse_since("2026-01-01T00:00:00Z", now) == "2026-01-01T00:00:00Z"
    assert parse_since(None, now) is None


def test_follow_prints_new_events_from_the_live_stream(collector: RunningCollector) -> None:
    """--follow lists the stored events, then prints each new matching one as it arrives,
    filtered like the listing, until Ctrl-C (exit 0)."""
    command = [sys.executable, "-m", "trackline", "events", "--host", collector.url]
    process = subprocess.Popen(
        [*command, "--follow", "--type", "track", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    listed = [json.loads(process.stdout.readline()) for _ in range(2)]
    assert [m["userId"] for m in listed] == ["019mr8mf4r", "someone-else"]
    with trackline.Client("events-key", host=collector.url, sync=True) as client:
        client.identify("new-user", {"plan": "pro"})
        client.track("new-user", "Live", {"n": 1})
    live = json.loads(process.stdout.readline())
    assert (live["userId"], live["event"]) == ("new-user", "Live")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out == ""


class _OldCollector(http.server.BaseHTTPRequestHandler):
    """A collector without a live stream: `/api/events` only, served from `stored`."""

    stored: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/api/events"):
            self.send_error(404)
            return
        body = json.dumps({"events": list(reversed(self.stored))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_follow_polls_a_collector_without_a_live_stream() -> None:
    """Without /api/stream, --follow polls /api/events and prints each event once."""
    old = {"type": "track", "userId": "u", "event": "Old", "messageId": "m1"}
    _OldCollector.stored = [{**old, "receivedAt": "2026-01-01T00:00:00.000Z"}]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OldCollector)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        command = [sys.executable, "-m", "trackline", "events", "--host", url, "--follow"]
        process = subprocess.Popen(
            [*command, "--json", "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "Old"
        new = {**old, "event": "New", "messageId": "m2", "receivedAt": "2026-01-01T00:00:01.000Z"}
        _OldCollector.stored.append(new)
        assert json.loads(process.stdout.readline())["event"] == "New"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert out == ""
    finally:
        server.shutdown()
        server.server_close()


def test_rows_are_cut_to_the_terminal_width_with_an_ellipsis() -> None:
    """Long values end in an ellipsis within their column; a width cuts the whole line."""
    message = {
        "type": "track",
        "userId": "a-very-long-user-identifier-indeed",
        "event": "E",
        "timestamp": "2026-11-28T14:00:07.123Z",
        "properties": {"text": "x" * 200},
    }
    line = _event_table.row(message, width=80)
    assert len(line) == 80
    assert line.endswith("…")
    assert "a-very-long-user-iden…" in line
    assert line.startswith("2026-11-28 14:00:07  track")


def test_follow_ends_with_status_1_when_the_collector_stops(tmp_path: pathlib.Path) -> None:
    """A stopped collector ends the live stream: the command says so and exits 1."""
    with serve(tmp_path / "stopping.sqlite3") as running:
        process = subprocess.Popen(
            [sys.executable, "-m", "trackline", "events", "--host", running.url, "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().startswith("TIME (UTC)")
    out, err = process.communicate(timeout=10)
    assert (process.returncode, out) == (1, "")
    assert err == "trackline events: the collector closed the live stream\n"


def test_a_collector_with_a_read_token_is_asked_with_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a collector started with a read token, `--read-token` (or
    TRACKLINE_READ_TOKEN) lists its events; without it the collector's refusal is shown."""
    token = "events-read-token-0123456789"
    with serve(tmp_path / "events.sqlite3", read_token=token) as running:
        with trackline.Client("events-key", host=running.url, sync=True) as client:
            client.track("019mr8mf4r", "Item Purchased")
        assert main(["events", "--host", running.url]) == 1
        assert "read token" in capsys.readouterr().err
        assert main(["events", "--host", running.url, "--read-token", token]) == 0
        assert "Item Purchased" in capsys.readouterr().out
        monkeypatch.setenv("TRACKLINE_READ_TOKEN", token)
        assert main(["events", "--host", running.url, "--json"]) == 0
        assert '"event": "Item Purchased"' in capsys.readouterr().out
