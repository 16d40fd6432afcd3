"""The `trackline` command: one subcommand per module in this package, each adding itself to
the parser through its `register` function, so commands can grow without touching each other."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from trackline._version import __version__

#: Subcommand modules, in the order `trackline --help` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "collector",
    "send",
    "importer",
    "events",
    "destinations",
    "replay",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="trackline",
        description="Server-side analytics events: send them, collect them, look at them.",
    )
    parser.add_argument("--version", action="version", version=f"trackline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"trackline.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
