"""`trackline collector`: run the local collector in the foreground until SIGINT/SIGTERM.

The options map one to one onto `CollectorSettings`. Secrets need not be on the command line
(where `ps` shows them): write keys may come from `--write-key-file` or `TRACKLINE_WRITE_KEYS`
(comma-separated), the read token from `--read-token-file` or `TRACKLINE_READ_TOKEN`. A bad
option, like a refused bind, exits with status 1 and says why.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackline.collector.settings import CollectorSettings

HELP = (
    "run the collector: a Tracking API server storing events in SQLite, or in PostgreSQL "
    "for several collector processes"
)
#: Units `--retention` takes, in seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """An argparse type: `30d`, `12h`, `90m` or `45s`, as seconds (more than zero)."""
    value, unit = text[:-1], text[-1:].lower()
    try:
        seconds = float(value) * _UNITS[unit]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and one of d, h, m, s (30d, 12h)"
        ) from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be longer than zero, not {text}")
    return seconds


def positive_count(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The collector's options, shared by `trackline collector` and `python -m`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free (8765)")
    parser.add_argument(
        "--db",
        default="trackline.sqlite3",
        metavar="PATH_OR_URL",
        help="SQLite database file, or a postgresql://USER@HOST:PORT/DB URL (trackline.sqlite3)",
    )
    parser.add_argument(
        "--processes",
        type=positive_count,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (PostgreSQL only) (1)",
    )
    parser.add_argument(
        "--retention",
        type=duration,
        metavar="DURATION",
        help="delete events received longer ago than this, e.g. 30d, with their delivery "
        "outcomes (PostgreSQL: a day's partition at a time; SQLite: a few thousand rows at a "
        "time, every minute) (default: keep everything)",
    )
    keys = parser.add_argument_group("access")
    keys.add_argument(
        "--write-key",
        action="append",
        default=[],
        metavar="KEY",
        dest="write_keys",
        help="accept only this write key (repeatable); without any (here, in --write-key-file "
        "or in $TRACKLINE_WRITE_KEYS), every key is accepted and the collector only listens "
        "on loopback",
    )
    keys.add_argument(
        "--write-key-file",
        action="append",
        default=[],
        metavar="FILE",
        dest="write_key_files",
        help="accept the write keys in FILE, one per line (repeatable)",
    )
    keys.add_argument(
        "--read-token",
        metavar="TOKEN",
        help="readers of /api/* and the debugger must show TOKEN (default: "
        "$TRACKLINE_READ_TOKEN); without one, only this machine may read",
    )
    keys.add_argument(
        "--read-token-file", metavar="FILE", help="the read token is the first line of FILE"
    )
    keys.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        dest="allow_hosts",
        help="also answer requests naming this host (repeatable; * for any); IP addresses, "
        "localhost and --host are always answered",
    )
    keys.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        dest="allow_origins",
        help="let web pages at ORIGIN (http://localhost:3000) send events and read the "
        "analytics.js settings from a browser (repeatable; * for any origin, with a warning: "
        "never for clearing the store or logging in)",
    )
    keys.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        dest="trusted_proxies",
        help="believe X-Forwarded-For/-Proto/-Host from this address or network (repeatable)",
    )
    parser.add_argument(
        "--analytics-js",
        metavar="FILE",
        help="serve FILE (analytics.js, e.g. from your node_modules) at "
        "/analytics.js/v1/{writeKey}/analytics.min.js, and the chunks beside it",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="route stored events to the destinations this TOML file lists "
        "(docs/reference/configuration.md)",
    )
    limits = parser.add_argument_group("deadlines")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request headers take longer (10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="answer 408 to a request whose body takes longer (30)",
    )
    limits.add_argument(
        "--send-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="disconnect a client that leaves an answer unread this long (30)",
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


def _read_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.read_token_file:
        lines = Path(args.read_token_file).read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""
    return args.read_token or environ.get("TRACKLINE_READ_TOKEN") or None


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> CollectorSettings:
    """The `CollectorSettings` the command line (and the environment) describe; raises
    `ConfigError` naming a bad option and `OSError` for a file that cannot be read."""
    from trackline.collector.access import read_key_file
    from trackline.collector.settings import CollectorSettings

    keys = list(args.write_keys)
    for path in args.write_key_files:
        keys += read_key_file(path)
    keys += [key.strip() for key in environ.get("TRACKLINE_WRITE_KEYS", "").split(",")]
    return CollectorSettings(
        args.db,
        host=args.host,
        port=args.port,
        write_keys=[key for key in keys if key],
        read_token=_read_token(args, environ),
        allow_hosts=args.allow_hosts,
        allow_origins=args.allow_origins,
        trusted_proxies=args.trusted_proxies,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        fsync=args.fsync,
        analytics_js=args.analytics_js,
        destinations=_destinations(args),
        retention=args.retention,
        processes=args.processes,
    )


def _destinations(args: argparse.Namespace) -> list[Any]:
    """The destinations of `--config`, or none; raises `ConfigFileError` (one line)."""
    if args.config is None:
        return []
    from trackline.collector.destinations import load

    return load(args.config)


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
    from trackline.collector.destinations import ConfigFileError
    from trackline.errors import ConfigError

    try:
        settings = settings_from(args)
    except ConfigFileError as exc:
        print(f"trackline collector: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, OSError) as exc:
        print(f"trackline collector: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn").setLevel(logging.WARNING)

    from trackline.collector.store import is_postgres_url, redact

    database = redact(args.db) if is_postgres_url(args.db) else args.db
    several = f", {args.processes} processes" if args.processes > 1 else ""

    def ready(url: str) -> None:
        print(f"trackline collector listening on {url} (database {database}{several})", flush=True)
        for destination in settings.destinations:
            state = "" if destination.enabled else " (disabled)"
            print(f"  destination {destination.name} ({destination.kind}){state}", flush=True)

    try:
        serve_forever(settings, on_ready=ready)
    except (OpenBindError, StorageError, OSError) as exc:
        print(f"trackline collector: {exc}", file=sys.stderr)
        return 1
    print("trackline collector stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trackline.collector`."""
    parser = argparse.ArgumentParser(prog="python -m trackline.collector", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
