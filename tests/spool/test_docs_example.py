"""The docs' Durable mode page: its first example runs as written (pointed at a local server)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.support import docs_examples
from tests.support.capture import CaptureServer


def test_durable_mode_page_example_runs_as_written(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """The example delivers its event through a spool directory that it leaves empty."""
    example = docs_examples.python_blocks("concepts/durable-mode.md")[0]
    assert_spools_and_delivers(example, tmp_path, capture)


def assert_spools_and_delivers(
    example: str, tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """`example` delivers one event through ./trackline-spool and leaves the spool empty."""
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        env={**os.environ, "TRACKLINE_HOST": capture.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [message] = capture.delivered()
    assert (message["event"], message["properties"]) == ("Order Completed", {"revenue": 39.95})
    assert "delivered=1" in result.stdout
    assert list((tmp_path / "trackline-spool").iterdir()) == []
