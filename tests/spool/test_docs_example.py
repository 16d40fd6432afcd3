"""The docs' Durable mode page: its first example runs as written (pointed at a local server)."""

from __future__ import annotations

import pathlib

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
    result = docs_examples.run_script(example, capture.url, tmp_path)
    assert result.returncode == 0, result.stderr
    [message] = capture.delivered()
    assert (message["event"], message["properties"]) == ("Order Completed", {"revenue": 39.95})
    assert "delivered=1" in result.stdout
    assert list((tmp_path / "trackline-spool").iterdir()) == []
