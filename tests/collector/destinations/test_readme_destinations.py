"""The README's Destinations section: its example runs as written, and its config example is
the one the config reader accepts."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

from trackline.collector.destinations import parse

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^## Destinations\n(.*?)(?=^## )", text, re.S | re.M)
    assert found, "README has no Destinations section"
    return found.group(1)


def test_the_in_process_example_runs() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", section(), re.S)[1:]
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"1 event in \d\d\.ndjson\.part\n", result.stdout), result.stdout


def test_the_config_example_is_valid() -> None:
    (toml,) = re.findall(r"```toml\n(.*?)```", section(), re.S)
    configs = parse(tomllib.loads(toml), environ={"SEGMENT_WRITE_KEY": "x"})
    assert [c.name for c in configs] == ["Webhook", "Segment", "Files", "Warehouse"]


def test_the_command_examples_run_as_written(tmp_path: pathlib.Path) -> None:
    """The `trackline destinations` and `trackline replay` lines of the command section work
    against a collector with those destinations."""
    from tests.collector.conftest import Http
    from tests.collector.destinations.conftest import destinations, drained, events, post
    from tests.support.capture import CaptureServer, Reply
    from tests.test_cli_readme import run_shell, shell_blocks
    from trackline.collector import serve

    block = shell_blocks()["A collector's destinations"]
    with CaptureServer() as hook:
        hook.script(Reply(400))
        configs = destinations(
            {"name": "Webhook", "kind": "webhook", "url": hook.url, "backoff_base": 0.01},
            {"name": "Files", "kind": "file", "path": str(tmp_path / "exports")},
        )
        with serve(tmp_path / "events.sqlite3", destinations=configs) as collector:
            http = Http(collector.url)
            post(http, events(1, 2))
            drained(http)
            ran = run_shell(block, tmp_path, collector.url)
            assert ran.returncode == 0, ran.stderr
            lines = ran.stdout.splitlines()
            assert lines[0].startswith("NAME")
            assert lines[-2:] == ["queued 1 dead letter for Webhook", "queued 2 events for Files"]
            table = drained(http)
            assert (table["Webhook"]["delivered"], table["Files"]["delivered"]) == (2, 4)
