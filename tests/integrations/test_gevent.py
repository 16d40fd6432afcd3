"""A real `gunicorn -k gevent --preload` worker: the client made in the master before the fork
(and before gevent patched threading) delivers from the worker while it runs, flushes at exit,
and never blocks the hub (gevent's own monitor thread watches it)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from typing import Any

import orjson

from tests.integrations.serving import fetch, gunicorn
from trackline.collector import RunningCollector
from trackline.collector.store import EventQuery

HITS = 20


def stored(collector: RunningCollector) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = orjson.loads(collector.storage.events(EventQuery(limit=1000)))
    return events


def start(host: str, sock: socket.socket) -> subprocess.Popen[str]:
    env = {
        "TEST_APP_TRACKLINE_HOST": host,
        "TEST_APP_FLUSH_INTERVAL": "0.2",
        "GEVENT_MONITOR_THREAD_ENABLE": "true",
        "GEVENT_MAX_BLOCKING_TIME": "0.5",
    }
    app = "tests.integrations.apps.gevent_app:application"
    return gunicorn(app, sock, env, "--worker-class=gevent", "--preload", "--workers=1")


def test_a_gevent_worker_delivers_while_running_and_at_exit(collector: RunningCollector) -> None:
    """Hits tracked from greenlets reach the collector while the server runs; one tracked
    right before SIGTERM arrives through the exit flush; the hub was never blocked by
    trackline; the master's pre-fork event arrives once."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = start(collector.url, sock)
        try:
            pids = {fetch(f"{url}/hit/n{i}")[1] for i in range(HITS)}
            deadline = time.monotonic() + 20
            while len([e for e in stored(collector) if e["event"] == "Gevent Hit"]) < HITS:
                assert time.monotonic() < deadline, "hits were not delivered while running"
                time.sleep(0.05)
            status, body = fetch(f"{url}/state")
            assert status == 200
            assert json.loads(body)["thread"].startswith("gevent")
            status, body = fetch(f"{url}/blocked")
            assert (status, json.loads(body)) == (200, [])
            fetch(f"{url}/hit/last")
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
    assert server.returncode == 0, stderr
    assert len(pids) == 1
    events = stored(collector)
    names = sorted(e["properties"]["name"] for e in events if e["event"] == "Gevent Hit")
    assert names == sorted([*(f"n{i}" for i in range(HITS)), "last"])
    assert [e["event"] for e in events].count("App Loaded") == 1
    assert collector.storage.stats().duplicates == 0
