"""The documentation of destinations: the Destinations page's in-process example runs as
written, its commands work against a collector with destinations, and the config examples
there and in the configuration reference are ones the config reader accepts, with every key
the reader knows in the reference's tables."""

from __future__ import annotations

import pathlib
import re
import tomllib

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import destinations, drained, events, post
from tests.support import docs_examples
from tests.support.capture import CaptureServer, Reply
from trackline.collector import serve
from trackline.collector.destinations import parse
from trackline.collector.destinations.config import COMMON_KEYS, KIND_KEYS

PAGE = "collector/destinations.md"
REFERENCE = "reference/configuration.md"


def toml_blocks(name: str) -> list[str]:
    """The ```toml blocks of the page `docs/NAME`."""
    page = docs_examples.page_named(name)
    return [block.source for block in docs_examples.blocks(page) if block.language == "toml"]


def test_the_in_process_example_runs() -> None:
    block = docs_examples.python_block(PAGE, "destinations=destinations")
    result = docs_examples.run_script(block)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"1 event in \d\d\.ndjson\.part\n", result.stdout), result.stdout


def test_the_config_examples_are_valid() -> None:
    """The Destinations page's file (one destination of each kind) and the reference's."""
    [page] = toml_blocks(PAGE)
    configs = parse(tomllib.loads(page), environ={"SEGMENT_WRITE_KEY": "x"})
    assert [c.name for c in configs] == ["Webhook", "Segment", "Files", "Warehouse"]
    [reference] = toml_blocks(REFERENCE)
    configs = parse(tomllib.loads(reference), environ={"WEBHOOK_SECRET": "x"})
    assert [(c.name, c.batch_size, c.retry_window) for c in configs] == [
        ("Webhook", 100, 86400.0),
        ("Files", 1000, 4 * 3600.0),
    ]


def test_the_reference_lists_every_key_of_the_file() -> None:
    """The configuration reference's two tables name exactly the keys the reader accepts:
    those of every kind, then each kind's own."""
    text = docs_examples.page_named(REFERENCE).read_text(encoding="utf-8")
    common = text.split("**What every kind takes.**", 1)[1].split("**What each kind", 1)[0]
    assert set(re.findall(r"^\| `([a-z_]+)` \|", common, re.M)) == COMMON_KEYS
    own = text.split("**What each kind takes besides.**", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([a-z-]+)` \| `([a-z_]+)` \|", own, re.M)
    assert {(kind, key) for kind, key in rows} == {
        (kind, key) for kind, keys in KIND_KEYS.items() for key in keys
    }


def test_the_command_examples_run_as_written(tmp_path: pathlib.Path) -> None:
    """The `trackline destinations` and `trackline replay` lines of the page work against a
    collector with those destinations."""
    [block] = [b for b in docs_examples.shell_blocks(PAGE) if "trackline replay" in b]
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
            ran = docs_examples.run_shell(block, tmp_path, collector.url)
            assert ran.returncode == 0, ran.stderr
            lines = ran.stdout.splitlines()
            assert lines[0].startswith("NAME")
            assert lines[-2:] == ["queued 1 dead letter for Webhook", "queued 2 events for Files"]
            table = drained(http)
            assert (table["Webhook"]["delivered"], table["Files"]["delivered"]) == (2, 4)
