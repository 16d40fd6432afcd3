"""The `trackline` command examples of the docs' command-line and historical import pages run
as written against a local collector."""

from __future__ import annotations

import pathlib
import re

from tests.support import docs_examples
from tests.support.docs_examples import run_shell
from trackline.collector import serve


def test_the_command_pages_run_as_written(tmp_path: pathlib.Path) -> None:
    """send prints five ids, import delivers both files (the second pass over standard input
    is deduplicated), and events lists what the collector stored."""
    line = docs_examples.shell_blocks("guides/command-line.md")
    imports = docs_examples.shell_blocks("guides/historical-import.md")
    blocks = {
        "Send one message": line[0],
        "Import historical events": "\n".join(imports),
        "Look at what a collector stored": line[1],
    }
    assert_the_commands_work(blocks, tmp_path)


def assert_the_commands_work(blocks: dict[str, str], tmp_path: pathlib.Path) -> None:
    """Run the send, import and events examples in turn against one fresh collector."""
    with serve(tmp_path / "commands.sqlite3") as collector:
        sent = run_shell(blocks["Send one message"], tmp_path, collector.url)
        assert sent.returncode == 0, sent.stderr
        assert len(sent.stdout.split()) == 5

        imported = run_shell(blocks["Import historical events"], tmp_path, collector.url)
        assert imported.returncode == 0, imported.stderr
        assert "history.jsonl: 3 valid, 0 rejected" in imported.stdout
        assert "history.jsonl: 3 sent, 0 rejected" in imported.stdout
        assert "orders.csv: 2 sent, 0 rejected" in imported.stdout

        shown = run_shell(blocks["Look at what a collector stored"], tmp_path, collector.url)
        assert shown.returncode == 0, shown.stderr
        everything, tracks = re.split(r"^TIME \(UTC\).*\n", shown.stdout, flags=re.M)[1:]
        assert len(everything.splitlines()) == 10
        assert [row.split()[4:6] for row in tracks.splitlines()] == [
            ["Item", "Purchased"],
            ["Order", "Completed"],
        ]
        assert (tmp_path / "found.jsonl").read_text().count("initech.com") == 1
