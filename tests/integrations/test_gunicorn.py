"""A real gunicorn (`--preload`, two workers) serving the Flask and the Django test apps: every
event reaches the collector with its request's context, delivered at shutdown.

`--preload` imports the app in the master, which initialises the default client and tracks an
"App Loaded" event (starting a delivery thread) before forking: the classic way peers lose
events. The client is set to hold everything (`flush_interval` 60 s), so nothing is sent while
the server runs and every event arrives through the exit flush of the process that made it.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
from typing import Any

import orjson
import pytest

from tests.collector.conftest import source_of
from tests.integrations.serving import fetch, gunicorn
from trackline.collector import RunningCollector
from trackline.collector.store import EventQuery

APPS = {
    "flask": ("tests.integrations.apps.flask_app:create_app()", "Flask Hit"),
    "django": ("tests.integrations.apps.django_app:application", "Django Hit"),
}
REQUESTS = 24


def start_gunicorn(app: str, host: str, sock: socket.socket) -> subprocess.Popen[str]:
    env = {
        "TEST_APP_SERVE": app,
        "TEST_APP_TRACKLINE_WRITE_KEY": f"{app}-key",
        "TEST_APP_TRACKLINE_HOST": host,
        "TEST_APP_TRACKLINE_OPTIONS": json.dumps({"flush_interval": 60, "flush_at": 1000}),
    }
    return gunicorn(APPS[app][0], sock, env, "--preload", "--workers=2")


def stored(collector: RunningCollector) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = orjson.loads(collector.storage.events(EventQuery(limit=1000)))
    return events


@pytest.mark.parametrize("app", sorted(APPS))
def test_preloaded_workers_deliver_every_event_with_its_context(
    app: str, collector: RunningCollector
) -> None:
    """Requests spread over two forked workers: each tracked event arrives once with the ip,
    userAgent and page of its request; the master's pre-fork event arrives once; nothing was
    sent before SIGTERM, so the exit flush in every process delivered it all."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = start_gunicorn(app, collector.url, sock)
        try:

            def hit(i: int) -> int:
                status, body = fetch(f"{url}/hit/n{i}?wait=0.05", {"User-Agent": f"agent-{i}"})
                assert status == 200, body
                return int(body)

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                worker_pids = set(pool.map(hit, range(REQUESTS)))
            assert stored(collector) == []
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=20)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
    assert server.returncode == 0, stderr
    assert len(worker_pids) == 2
    assert server.pid not in worker_pids

    events = stored(collector)
    stats = collector.storage.stats()
    assert stats.duplicates == 0, "an event arrived twice"
    assert stats.by_source == {source_of(collector, f"{app}-key"): REQUESTS + 1}
    [loaded] = [e for e in events if e["event"] == "App Loaded"]
    assert loaded["properties"]["pid"] == server.pid
    hits: dict[str, dict[str, Any]] = {
        e["properties"]["name"]: e for e in events if e["event"] == APPS[app][1]
    }
    assert sorted(hits) == sorted(f"n{i}" for i in range(REQUESTS))
    for i in range(REQUESTS):
        event = hits[f"n{i}"]
        assert event["properties"]["pid"] in worker_pids
        assert event["context"]["ip"] == "127.0.0.1"
        assert event["context"]["userAgent"] == f"agent-{i}"
        assert event["context"]["page"]["url"] == f"{url}/hit/n{i}?wait=0.05"
    assert len(events) == REQUESTS + 1
