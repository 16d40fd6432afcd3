"""The README, a newcomer's first page: its Python examples run as written (pointed at a local
server), its two commands are the ones CI runs, and every link in it leads somewhere. The rest
of what it once showed lives on the documentation pages, whose examples
tests/test_docs_examples.py and the tests of each subject run."""

from __future__ import annotations

import pathlib
import re
import urllib.parse

from tests.support import docs_examples
from tests.support.capture import CaptureServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The README's two commands: try it, and run the tests.
TRY_IT = "pip install -e '.[collector]' && trackline demo"
RUN_THE_TESTS = "pip install -e '.[dev]' && python -m pytest"


def section(title: str) -> str:
    """The text of one `## title` section of the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def python_blocks(title: str) -> list[str]:
    """The ```python blocks of one `## title` section of the README."""
    return re.findall(r"```python\n(.*?)```", section(title), re.S)


def test_quick_start_runs_as_written(capture: CaptureServer) -> None:
    """The quick start delivers the six calls, in order; nothing raises."""
    events = run_without_the_local_collector(python_blocks("Quick start"), capture)
    types = [message["type"] for message in events]
    assert types == ["identify", "track", "page", "screen", "group", "alias"]
    assert events[1]["properties"] == {"revenue": 39.95, "shipping": "2-day"}


def test_sending_events_page_runs_as_written(capture: CaptureServer) -> None:
    """The docs' Sending events page delivers the quick start's six calls, then its three
    per-call option examples, each with its option."""
    blocks = docs_examples.python_blocks("guides/sending-events.md")
    events = run_without_the_local_collector(blocks, capture)
    types = [message["type"] for message in events]
    assert types[:6] == ["identify", "track", "page", "screen", "group", "alias"]
    assert len(events) == 9
    assert events[6]["timestamp"] == "2010-01-18T00:00:00.000Z"
    assert events[7]["anonymousId"] == "some-id"
    assert events[8]["integrations"] == {"All": False, "KISSmetrics": True}


def run_without_the_local_collector(
    blocks: list[str], capture: CaptureServer
) -> list[dict[str, object]]:
    """Run the blocks that need no collector on 127.0.0.1:8765 as one script, with
    TRACKLINE_HOST at `capture`; what `capture` received."""
    runnable = [block for block in blocks if "127.0.0.1:8765" not in block]
    assert runnable
    result = docs_examples.run_script("\n".join(runnable), capture.url)
    assert result.returncode == 0, result.stderr
    return capture.delivered()


def test_the_two_commands_are_the_ones_ci_runs() -> None:
    """ "Try it" and "Run the tests" show one command each, as written here; .ci/run installs
    the dev extra and runs the suite the same way (`trackline demo` itself is run by
    tests/collector/test_end_to_end.py)."""
    assert re.findall(r"```sh\n(.*?)\n```", section("Try it"), re.S) == [TRY_IT]
    assert re.findall(r"```sh\n(.*?)\n```", section("Run the tests"), re.S) == [RUN_THE_TESTS]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pip install -e '.[dev]'" in ci
    assert re.search(r"^python -m pytest$", ci, re.M)


def test_every_link_leads_to_a_file_of_the_repository() -> None:
    """Relative links and images point at files that exist; links into the documentation
    point at pages of the site (a page left out of mkdocs.yml's nav fails its strict build)."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in targets if not urllib.parse.urlsplit(t).scheme and not t.startswith("#")]
    assert len(local) >= 30
    missing = [t for t in local if not (ROOT / t.split("#", 1)[0]).exists()]
    assert missing == []
    pages = {t.split("#", 1)[0] for t in local if t.startswith("docs/") and t.endswith(".md")}
    site = {str(page.relative_to(ROOT)) for page in docs_examples.pages()}
    assert pages <= site
