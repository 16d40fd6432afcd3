"""What several `trackline` subcommands share: the destination options and error wording."""

from __future__ import annotations

import argparse
import sys

from trackline.errors import ConfigError

#: Exit codes of the commands that send: everything delivered, something not, bad usage.
EXIT_OK = 0
EXIT_NOT_DELIVERED = 1
EXIT_USAGE = 2


def add_destination_options(parser: argparse.ArgumentParser) -> None:
    """`--write-key` and `--host`, defaulting to TRACKLINE_WRITE_KEY and TRACKLINE_HOST."""
    parser.add_argument(
        "--write-key",
        metavar="KEY",
        help="the source's write key (default: $TRACKLINE_WRITE_KEY)",
    )
    parser.add_argument(
        "--host",
        metavar="URL",
        help="API origin, e.g. http://127.0.0.1:8765 "
        "(default: $TRACKLINE_HOST, else https://api.segment.io)",
    )


def describe_config_error(error: ConfigError) -> str:
    """A `ConfigError` in the command line's terms: `--write-key` rather than `write_key`."""
    if error.option == "write_key":
        return "a write key is required: pass --write-key or set TRACKLINE_WRITE_KEY"
    return f"--{error.option.replace('_', '-')}: {error.problem}"


def fail(command: str, message: str, code: int) -> int:
    """Print `trackline COMMAND: message` on stderr and return `code` (the exit status)."""
    print(f"trackline {command}: {message}", file=sys.stderr)
    return code


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be greater than zero, not {text}")
    return value
