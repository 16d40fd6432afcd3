"""The README's Python examples run as written (pointed at a local server)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from typing import Any

from tests.support import docs_examples
from tests.support.capture import CaptureServer

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one `## section` of the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {section!r}"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


def run_example(source: str) -> dict[str, Any]:
    """Run one example in a fresh namespace; returns what it defined."""
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace


def test_quick_start_runs_as_written(capture: CaptureServer) -> None:
    """The quick start and per-call option examples deliver their events, nothing raises."""
    assert_delivers_the_quick_start(python_blocks("Quick start"), capture)


def test_sending_events_page_runs_as_written(capture: CaptureServer) -> None:
    """The docs' Sending events page delivers the same events as the README's quick start."""
    assert_delivers_the_quick_start(
        docs_examples.python_blocks("guides/sending-events.md"), capture
    )


def assert_delivers_the_quick_start(blocks: list[str], capture: CaptureServer) -> None:
    """The blocks that need no local collector, run as one script, deliver the six calls
    and the three per-call option examples to `capture`."""
    runnable = [block for block in blocks if "127.0.0.1:8765" not in block]
    assert len(runnable) >= 2
    script = "\n".join(runnable)
    env = {**os.environ, "TRACKLINE_HOST": capture.url}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = capture.delivered()
    types = [message["type"] for message in events]
    assert types[:6] == ["identify", "track", "page", "screen", "group", "alias"]
    assert len(events) == 9
    assert events[6]["timestamp"] == "2010-01-18T00:00:00.000Z"
    assert events[7]["anonymousId"] == "some-id"
    assert events[8]["integrations"] == {"All": False, "KISSmetrics": True}
