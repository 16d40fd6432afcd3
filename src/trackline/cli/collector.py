"""`trackline collector`: run the local collector in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

HELP = "run the local collector: a Tracking API server storing events in SQLite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The collector's options, shared by `trackline collector` and `python -m`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free (8765)")
    parser.add_argument(
        "--db", default="trackline.sqlite3", help="SQLite database file (trackline.sqlite3)"
    )
    parser.add_argument(
        "--write-key",
        action="append",
        default=[],
        metavar="KEY",
        dest="write_keys",
        help="accept only this write key (repeatable); without any, every key is accepted "
        "and the collector only listens on loopback",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        dest="allow_origins",
        help="let web pages at ORIGIN (http://localhost:3000) send events and read the "
        "analytics.js settings from a browser (repeatable; * for any origin, with a warning)",
    )
    parser.add_argument(
        "--analytics-js",
        metavar="FILE",
        help="serve FILE (analytics.js, e.g. from your node_modules) at "
        "/analytics.js/v1/{writeKey}/analytics.min.js, and the chunks beside it",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request headers take longer (10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="answer 408 to a request whose body takes longer (30)",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="make every commit survive power loss, not only a crash (slower)",
    )
    parser.add_argument("--log-level", default="INFO", help="log level of the output (INFO)")


def register(subparsers: Any) -> None:
    """Add the `collector` subcommand."""
    parser = subparsers.add_parser("collector", help=HELP, description=HELP)
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; returns the exit code."""
    try:
        from trackline.collector import OpenBindError, StorageError
        from trackline.collector import run as serve_forever
    except ImportError as exc:
        print(
            f"trackline collector needs the collector extra ({exc.name} is missing): "
            "pip install 'trackline[collector]'",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn").setLevel(logging.WARNING)

    def ready(url: str) -> None:
        print(f"trackline collector listening on {url} (database {args.db})", flush=True)

    try:
        serve_forever(
            args.db,
            host=args.host,
            port=args.port,
            write_keys=args.write_keys,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            fsync=args.fsync,
            allow_origins=args.allow_origins,
            analytics_js=args.analytics_js,
            on_ready=ready,
        )
    except (OpenBindError, StorageError, OSError, ValueError) as exc:
        print(f"trackline collector: {exc}", file=sys.stderr)
        return 1
    print("trackline collector stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trackline.collector`."""
    parser = argparse.ArgumentParser(prog="python -m trackline.collector", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
