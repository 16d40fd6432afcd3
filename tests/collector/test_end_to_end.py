"""The trackline client and the collector together, and the `trackline demo` command."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import trackline
from tests.collector.conftest import Http, source_of
from trackline.collector import RunningCollector


def test_client_delivers_every_call_to_the_collector(
    collector: RunningCollector, http: Http
) -> None:
    """Each of the six calls, with per-call options, is delivered by a real Client, stored
    once, enriched, and the client counts it delivered."""
    client = trackline.Client("e2e-key", host=collector.url, flush_interval=0.05)
    try:
        ids = [
            client.identify("u1", {"name": "Tom", "address": {"city": "Boston"}}),
            client.track("u1", "Item Purchased", {"revenue": 39.95}, context={"ip": "1.2.3.4"}),
            client.page("u1", "Login", {"path": "/login"}, category="Auth"),
            client.screen(None, "Register", anonymous_id="anon-1"),
            client.group("u1", "initech", {"name": "Initech"}),
            client.alias("anon-1", "u1"),
            client.track(
                "u2",
                "Workout Logged",
                timestamp=datetime(2010, 1, 18, tzinfo=UTC),
                integrations={"All": False, "KISSmetrics": True},
            ),
        ]
        assert client.flush(timeout=10.0)
        stats = client.stats
    finally:
        client.shutdown(timeout=5.0)
    assert (stats.delivered, stats.dropped_total, stats.unaccounted) == (len(ids), 0, 0)
    stored = {event["messageId"]: event for event in http.events()}
    assert set(stored) == set(ids)
    track = stored[ids[1]]
    assert track["properties"] == {"revenue": 39.95}
    assert track["context"]["ip"] == "1.2.3.4"
    assert track["context"]["library"]["name"] == "trackline"
    historical = stored[ids[6]]
    assert historical["originalTimestamp"] == "2010-01-18T00:00:00.000Z"
    assert historical["timestamp"].startswith("2010-01-18T00:00:0")
    assert historical["integrations"] == {"All": False, "KISSmetrics": True}
    assert http.get("/api/stats").json["by_source"] == {source_of(collector, "e2e-key"): len(ids)}


def test_client_retry_after_a_lost_answer_stores_once(
    collector: RunningCollector, http: Http
) -> None:
    """The same messages delivered twice (as a client retry would) are stored once."""
    client = trackline.Client("k", host=collector.url, flush_interval=0.05)
    try:
        message_id = client.track("u1", "E", message_id="fixed-id")
        again = client.track("u1", "E", message_id="fixed-id")
        assert client.flush(timeout=10.0)
    finally:
        client.shutdown(timeout=5.0)
    assert message_id == again == "fixed-id"
    assert [event["messageId"] for event in http.events()] == ["fixed-id"]
    assert http.get("/api/stats").json["duplicates"] == 1


def test_demo_command_prints_the_stored_events() -> None:
    """`trackline demo` runs end to end on its own: exit 0, a table of the stored examples,
    and the client's stats with every event delivered."""
    proc = subprocess.run(
        [sys.executable, "-m", "trackline", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("collector listening on http://127.0.0.1:")
    header = next(line for line in lines if line.startswith("TIME"))
    assert header.split() == ["TIME", "(UTC)", "TYPE", "USER", "EVENT", "/", "NAME", "DETAILS"]
    rows = lines[lines.index(header) + 1 : lines.index("", lines.index(header))]
    assert [row.split()[2] for row in rows].count("track") == 4
    assert {row.split()[2] for row in rows} == {
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    }
    assert any("Workout Logged" in row and row.startswith("2010-01-18 ") for row in rows)
    assert f"delivered {len(rows)}, dropped none" in proc.stdout
    assert f"collector stored {len(rows)} events" in proc.stdout


def test_importing_trackline_leaves_the_collector_out() -> None:
    """`import trackline` and the `trackline` command's parser never import starlette or
    uvicorn: the client needs neither, and they are only in the collector extra."""
    code = (
        "import sys, trackline, trackline.cli; trackline.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_demo_serve_keeps_the_collector_running_until_sigterm() -> None:
    """`trackline demo --serve` prints the collector's URL, keeps serving it, and exits 0 on
    SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackline", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()])
    reader.start()
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line.startswith("collector still serving on "):
                url = line.split()[4].rstrip(";")
                assert f"{url}/debugger" in line
        assert len(Http(url).events()) == 12
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
