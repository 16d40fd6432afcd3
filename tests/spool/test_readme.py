"""The README's durable-mode example runs as written (pointed at a local server)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from tests.support import docs_examples
from tests.support.capture import CaptureServer

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_durable_mode_example_runs_as_written(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """The example delivers its event through a spool directory that it leaves empty."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Durable mode\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no Durable mode section"
    [example] = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert_spools_and_delivers(example, tmp_path, capture)


def test_durable_mode_page_example_runs_as_written(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """The docs' Durable mode page opens with the same example, with the same outcome."""
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
