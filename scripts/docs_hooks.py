"""MkDocs hooks: the reference pages that are generated from the code rather than written.

A page asks for a generated part with an HTML comment on a line of its own:

- `<!-- generated: cli -->` becomes the reference of every `trackline` command, read from the
  argument parsers the commands run with, so an
  option added to a command appears in the docs without anyone copying it;
- `<!-- generated: drop-reasons -->` becomes the table of `trackline.DropReason`, from the
  enum and its members' docstrings.

The comment stays invisible on GitHub, where the page still reads as prose. The hooks import
trackline from this checkout's `src/`, whatever else is installed, so the site always
describes the code beside it.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

DIRECTIVE = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)
USAGE_WIDTH = 88


def cell(text: str) -> str:
    """`text` made safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An action's help with `%(default)s` and friends filled in, as `--help` shows it."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    formatter = parser._get_formatter()
    return formatter._expand_help(action)


def argument_name(action: argparse.Action) -> str:
    """How an argument is written: `--host URL`, `-q, --query TEXT`, `TYPE`, `--follow`."""
    metavar = action.metavar
    if not action.option_strings:
        return str(metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if metavar is None:
        metavar = action.dest.upper()
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage lines `--help` prints, at a fixed width so the page does not depend on the
    terminal that built it."""
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The subcommands of `parser`, in the order `--help` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    """A Markdown table of a parser's arguments, positionals first, `--help` left out."""
    rows = [
        f"| `{argument_name(action)}` | {cell(help_text(parser, action))} |"
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
    ]
    if not rows:
        return []
    return ["| argument | meaning |", "|---|---|", *rows, ""]


def command_reference(parser: argparse.ArgumentParser, level: int = 2) -> list[str]:
    """One command's section: heading, description, usage and arguments, then its
    subcommands'."""
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```text", usage(parser), "```", ""]
    lines += arguments_table(parser)
    for _name, child in subcommands(parser):
        lines += command_reference(child, level + 1)
    return lines


def cli_reference() -> str:
    """Every command of the `trackline` program."""
    from trackline.cli import build_parser

    return "\n".join(command_reference(build_parser()))


def member_docstrings(cls: type) -> dict[str, str]:
    """The docstrings written under each member of a class (`NAME = value` then a string),
    which Python keeps only in the source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    found: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.Assign)
            and isinstance(statement.targets[0], ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.targets[0].id] = inspect.cleandoc(following.value.value)
    return found


def drop_reasons() -> str:
    """The closed set of drop reasons, from `trackline.DropReason`."""
    from trackline.stats import DropReason

    meanings = member_docstrings(DropReason)
    lines = ["| reason | meaning |", "|---|---|"]
    for member in DropReason:
        lines.append(f"| `{member.value}` | {cell(meanings.get(member.name, ''))} |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "drop-reasons": drop_reasons,
}


def expand(markdown: str) -> str:
    """`markdown` with every `<!-- generated: NAME -->` line replaced by what it names."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated part {name!r}: known are {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return DIRECTIVE.sub(replace, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: expand the generated parts of each page before it is rendered."""
    return expand(markdown)
