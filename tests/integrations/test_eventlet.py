"""Under eventlet (`eventlet.monkey_patch()`), the client's workers are green threads: events
tracked from green threads are delivered while the script runs, and those left at its end
are flushed by the exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from trackline.collector import RunningCollector
from trackline.collector.store import EventQuery

#: Run, never imported: importing it would patch this process.
SCRIPT = Path(__file__).parent / "apps" / "eventlet_script.py"


def test_an_eventlet_script_delivers_while_running_and_at_exit(
    collector: RunningCollector,
) -> None:
    running, at_exit = 200, 50
    done = subprocess.run(
        [sys.executable, str(SCRIPT), collector.url, str(running), str(at_exit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"delivered {running}"
    events = orjson.loads(collector.storage.events(EventQuery(limit=1000)))
    assert sorted(event["properties"]["n"] for event in events) == list(range(running + at_exit))
