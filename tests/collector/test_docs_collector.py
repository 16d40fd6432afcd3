"""The docs' Running the collector page: its in-process `serve` example runs as written."""

from __future__ import annotations

import re

from tests.support import docs_examples


def test_in_process_example_on_the_collector_page_runs() -> None:
    """The `serve` example starts a collector, delivers one event to it and prints its stats."""
    [block] = [b for b in docs_examples.python_blocks("collector/index.md") if "serve(" in b]
    assert_serves_and_stores(block)


def assert_serves_and_stores(block: str) -> None:
    """`block` stores one event in a collector it serves, and prints the store's stats."""
    result = docs_examples.run_script(block)
    assert result.returncode == 0, result.stderr
    # The source is the key's id: its first character and a keyed hash, never the key.
    expected = r"Stats\(events=1, by_type=\{'track': 1\}, by_source=\{'K~[0-9a-f]{12}': 1\}"
    assert re.search(expected, result.stdout), result.stdout
