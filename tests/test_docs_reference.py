"""The reference pages of the documentation agree with the code they describe.

The CLI and drop-reason references are generated from the code (scripts/docs_hooks.py); the
client options and the collector's routes are written by hand, so these tests fail when an
option or a route is added, renamed or removed without its page.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
from types import ModuleType

import pytest

import trackline
from tests.support.docs_examples import DOCS, ROOT
from trackline.cli import build_parser
from trackline.collector import create_app


def hooks() -> ModuleType:
    """scripts/docs_hooks.py, the MkDocs hooks, imported by path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_column(page: str) -> list[str]:
    """The first code span of each table row of a reference page."""
    text = (DOCS / "reference" / page).read_text(encoding="utf-8")
    return re.findall(r"^\| `([^`]+)` \|", text, re.M)


def test_every_client_option_is_documented() -> None:
    """The options page lists exactly the keyword arguments of `trackline.Client`."""
    parameters = set(inspect.signature(trackline.Client.__init__).parameters) - {"self"}
    documented = set(first_column("client-options.md")) - {
        "TRACKLINE_WRITE_KEY",
        "TRACKLINE_HOST",
        "TRACKLINE_SPOOL",
    }
    assert documented == parameters


def test_every_collector_route_is_documented() -> None:
    """The HTTP API page's table names exactly the collector app's routes and methods."""
    text = (DOCS / "reference" / "http-api.md").read_text(encoding="utf-8")
    table = text.split("\n\n")[2]
    documented: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        method = ""
        for span in re.findall(r"`([^`]+)`", row.split("|")[1]):
            if " " in span:
                method, span = span.split(" ", 1)
            documented.add((method, re.sub(r"\{[^}]*\}", "{}", span)))
    routes = {
        (method, re.sub(r"\{[^}]*\}", "{}", route.path))
        for route in create_app(":memory:").routes
        for method in route.methods - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert documented == routes


def test_every_command_argument_has_help() -> None:
    """Each argument of each command says what it does, so the generated reference has no
    empty row."""
    missing = []
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_generated_cli_reference_lists_every_command() -> None:
    """The CLI page's generated part has a section, usage and table for each command."""
    reference = hooks().cli_reference()
    for command in ("demo", "collector", "send", "import", "events", "destinations", "replay"):
        assert f"### `trackline {command}`" in reference
        assert f"usage: trackline {command}" in reference
    assert "| `--write-key KEY` |" in reference
    assert "<!-- generated: cli -->" in (DOCS / "reference" / "cli.md").read_text()


def test_generated_drop_reasons_list_the_enum() -> None:
    """The drop reasons table has one row per `DropReason`, with its docstring."""
    table = hooks().drop_reasons()
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [reason.value for reason in trackline.DropReason]
    assert all(row.rstrip(" |").split("| ")[-1] for row in rows)
    assert (
        "<!-- generated: drop-reasons -->" in (DOCS / "reference" / "drop-reasons.md").read_text()
    )


def test_unknown_generated_part_fails_the_build() -> None:
    """A misspelt directive stops the build instead of leaving a hole in the page."""
    with pytest.raises(ValueError, match="unknown generated part 'clii'"):
        hooks().expand("<!-- generated: clii -->")
