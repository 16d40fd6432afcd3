"""`trackline destinations`: a collector's destinations and their queues, as a table.

```sh
trackline destinations                 # NAME KIND DELIVERED PENDING RETRYING FAILED ...
trackline destinations --json          # the collector's GET /api/destinations as it is
```

A collector started with a read token wants it, as for `trackline events`: `--read-token` or
`TRACKLINE_READ_TOKEN`, sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import urllib3

from trackline.cli._common import fail
from trackline.cli.events import (
    CollectorError,
    add_host_option,
    add_read_token_option,
    collector_host,
    read_token_headers,
    unreachable,
)

#: (header, key, right-aligned) of each column.
COLUMNS: Final = (
    ("NAME", "name", False),
    ("KIND", "kind", False),
    ("DELIVERED", "delivered", True),
    ("PENDING", "pending", True),
    ("RETRYING", "retrying", True),
    ("FAILED", "failed", True),
    ("LAST SUCCESS", "last_success_at", False),
    ("LAST ERROR", "last_error", False),
)
MAX_ERROR: Final = 60


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `trackline destinations` to the command line."""
    parser = subparsers.add_parser(
        "destinations",
        help="list a collector's destinations and their queues",
        description="Print each destination of a running trackline collector: events "
        "delivered, pending, retrying and failed (dead letters), the last success and error.",
    )
    add_host_option(parser)
    add_read_token_option(parser)
    parser.add_argument("--json", action="store_true", help="print the JSON the collector gave")
    parser.set_defaults(run=run)


def request(method: str, url: str, token: str | None = None) -> Any:
    """Ask the collector, with its read token (`token`, else `TRACKLINE_READ_TOKEN`) when
    there is one; its JSON answer, or `CollectorError` saying what went wrong."""
    http = urllib3.PoolManager(
        retries=False,
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        headers=read_token_headers(token),
    )
    try:
        response = http.request(method, url)
    except urllib3.exceptions.HTTPError as exc:
        raise unreachable(url, exc) from None
    try:
        document = json.loads(response.data)
    except ValueError:
        document = None
    if response.status != 200:
        detail = document.get("message") if isinstance(document, dict) else None
        raise CollectorError(f"the collector answered {response.status}: {detail or ''}".strip())
    return document


def table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The destinations as aligned text lines, a header first."""
    cells = [[header for header, _, _ in COLUMNS]]
    for row in rows:
        line = []
        for _, key, _ in COLUMNS:
            value = row.get(key)
            text = "-" if value is None else str(value)
            if key == "kind" and row.get("enabled") is False:
                text += " (off)"
            if key == "name" and row.get("down"):
                text += " (down)"
            line.append(text[:MAX_ERROR])
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, (_, _, right) in zip(line, widths, COLUMNS, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        host = collector_host(args.host)
    except ValueError as exc:
        return fail("destinations", str(exc), 2)
    try:
        rows = request("GET", f"{host}/api/destinations", args.read_token)
    except CollectorError as exc:
        return fail("destinations", str(exc), 1)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("(no destinations: start the collector with --config FILE)")
    else:
        print("\n".join(table(rows)))
    return 0
