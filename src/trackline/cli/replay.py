"""`trackline replay`: queue a collector's stored events for a destination again.

```sh
trackline replay --destination Webhook --failed      # retry the dead letters
trackline replay --destination Warehouse --since 2d  # backfill from two days of history
```

Asks the collector (`POST /api/destinations/{name}/replay`), which queues them while it keeps
serving; it only takes the request from the machine it runs on, with its read token when it
has one (`--read-token` or `TRACKLINE_READ_TOKEN`).
"""

from __future__ import annotations

import argparse
import urllib.parse

from trackline.cli._common import fail
from trackline.cli.destinations import request
from trackline.cli.events import (
    CollectorError,
    add_host_option,
    add_read_token_option,
    add_since_option,
    collector_host,
    parse_since,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `trackline replay` to the command line."""
    parser = subparsers.add_parser(
        "replay",
        help="queue stored events for a destination again (dead letters, or a backfill)",
        description="Queue a running collector's stored events for one destination again: "
        "its dead letters with --failed, else every stored event the destination's "
        "integrations and types select that it is not already waiting for.",
    )
    parser.add_argument("--destination", required=True, metavar="NAME", help="its name")
    parser.add_argument("--failed", action="store_true", help="only its dead letters")
    add_since_option(parser, "only events")
    add_host_option(parser)
    add_read_token_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        host = collector_host(args.host)
        since = parse_since(args.since)
    except ValueError as exc:
        return fail("replay", str(exc), 2)
    query = {"failed": "1" if args.failed else None, "since": since}
    encoded = urllib.parse.urlencode({k: v for k, v in query.items() if v})
    name = urllib.parse.quote(args.destination, safe="")
    try:
        answer = request(
            "POST", f"{host}/api/destinations/{name}/replay?{encoded}", args.read_token
        )
    except CollectorError as exc:
        return fail("replay", str(exc), 1)
    queued = int(answer["queued"])
    what = "dead letter" if args.failed else "event"
    print(f"queued {queued} {what}{'' if queued == 1 else 's'} for {args.destination}")
    return 0
