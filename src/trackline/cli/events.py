"""`trackline events`: what a collector stored, as a table; `--follow` keeps printing new ones.

```sh
trackline events --type track --user-id 019mr8mf4r --since 10m
trackline events --follow            # like tail -f: the live stream, or polling without one
trackline events --all --json > all.jsonl   # every event, oldest first, for trackline import
```

Reads the collector's `GET /api/events` (filters as its query parameters) and, to follow, its
server-sent event stream `GET /api/stream`, filtered here the same way. The stream is opened
before the listing is fetched, so no event falls between the two; one seen twice is printed
once. A collector without `/api/stream` is polled instead. `--all` reads the export,
`GET /api/events?format=ndjson&order=asc`, and prints each line as it comes: memory stays flat
however many events there are. A collector started with a read token wants it:
`--read-token` or `TRACKLINE_READ_TOKEN`, sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Final

import urllib3

from trackline.cli import _event_table
from trackline.cli._common import fail, positive_seconds
from trackline.wire import TYPES_IN_ORDER

DEFAULT_COLLECTOR: Final = "http://127.0.0.1:8765"
#: A live stream sends a keep-alive every 15 s; this long without a byte means it is gone.
STREAM_SILENCE: Final = 60.0
#: Events fetched per poll when following without a stream.
POLL_LIMIT: Final = 1000
#: Events listed without `--limit`.
DEFAULT_LIMIT: Final = 20
#: `--all`: seconds the export may go without a byte (a `q` filter's pages can scan a long
#: way between two matches).
EXPORT_SILENCE: Final = 300.0
_AGE: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Filters of `/api/events`: option name -> the message field compared on the stream.
FILTERS: Final = {"type": "type", "user_id": "userId", "anonymous_id": "anonymousId"}


class CollectorError(Exception):
    """The collector could not be asked, or refused the question; the text says which."""


def add_host_option(parser: argparse.ArgumentParser) -> None:
    """`--host`, the collector asked (also for `trackline destinations` and `replay`)."""
    parser.add_argument(
        "--host",
        metavar="URL",
        help=f"the collector (default: $TRACKLINE_HOST, else {DEFAULT_COLLECTOR})",
    )


def add_read_token_option(parser: argparse.ArgumentParser) -> None:
    """`--read-token TOKEN`, for a collector started with one (read by `read_token_headers`)."""
    parser.add_argument(
        "--read-token",
        metavar="TOKEN",
        help="the collector's read token, if it has one (default: $TRACKLINE_READ_TOKEN)",
    )


def read_token_headers(token: str | None) -> dict[str, str] | None:
    """The `Authorization: Bearer` header for `token`, else `TRACKLINE_READ_TOKEN`; None
    without either (a collector without a token answers this machine as it is)."""
    token = token or os.environ.get("TRACKLINE_READ_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else None


def add_since_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--since WHEN`, read by `parse_since`; `what` says what it keeps."""
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help=f"{what} received at or after WHEN: ISO 8601, or an age such as 30s, 10m, 2h, 7d",
    )


def unreachable(url: str, exc: Exception) -> CollectorError:
    """The error for a collector that did not answer `url` at all."""
    origin = url.split("/api/", 1)[0]
    return CollectorError(
        f"cannot reach the collector at {origin} ({type(exc).__name__}); "
        "is `trackline collector` running?"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `trackline events` to the command line."""
    parser = subparsers.add_parser(
        "events",
        help="list the events a collector stored; --follow to watch new ones",
        description="Print the newest events a trackline collector stored, oldest first, "
        "as a table (or JSON lines). --follow keeps printing new events until Ctrl-C.",
    )
    add_host_option(parser)
    parser.add_argument("--type", choices=TYPES_IN_ORDER, help="only this type")
    parser.add_argument("--user-id", metavar="ID", help="only this user")
    parser.add_argument("--anonymous-id", metavar="ID", help="only this anonymous id")
    parser.add_argument("--event", metavar="NAME", help="only this event (or page/screen) name")
    parser.add_argument("-q", dest="q", metavar="TEXT", help="only messages containing TEXT")
    add_since_option(parser, "only events")
    parser.add_argument(
        "--limit",
        type=int,
        help=f"how many of the newest to list (default: {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="every matching event, oldest first, however many (with --json: a file that "
        "trackline import reads back)",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="then keep printing new events")
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="--follow without a live stream: seconds between polls (default: 1)",
    )
    parser.add_argument("--json", action="store_true", help="print each message as a JSON line")
    add_read_token_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """List (and follow) the events; returns the exit status."""
    try:
        host = collector_host(args.host)
        since = parse_since(args.since)
    except ValueError as exc:
        return fail("events", str(exc), 2)
    if args.all and (args.follow or args.limit is not None):
        return fail("events", "--all lists every event: leave out --follow and --limit", 2)
    params = {name: getattr(args, name) for name in (*FILTERS, "event", "q")}
    params = {name: value for name, value in params.items() if value}
    printer = _Printer(args.json)
    http = urllib3.PoolManager(
        retries=False,
        timeout=urllib3.Timeout(connect=5.0, read=30.0),
        headers=read_token_headers(args.read_token),
    )
    if args.all:
        try:
            _export(http, host, {**params, "since": since}, args.json)
        except KeyboardInterrupt:
            return 130
        except CollectorError as exc:
            return fail("events", str(exc), 1)
        return 0
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    try:
        stream = _open_stream(http, host) if args.follow else None
        listing = _fetch(http, host, {**params, "since": since, "limit": limit})
        printer.start(bool(listing) or args.follow)
        for message in reversed(listing):
            printer.show(message)
        if not args.follow:
            return 0
        if stream is not None:
            _follow_stream(stream, params, printer)
        else:
            _follow_polling(http, host, params, printer, args.interval, listing)
    except KeyboardInterrupt:
        return 0
    except CollectorError as exc:
        return fail("events", str(exc), 1)
    return 0


def collector_host(value: str | None) -> str:
    """The collector's origin from `--host`, `TRACKLINE_HOST` or the default."""
    host = (value or os.environ.get("TRACKLINE_HOST") or DEFAULT_COLLECTOR).rstrip("/")
    parts = urllib.parse.urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--host: {host!r} is not an http(s) URL such as {DEFAULT_COLLECTOR}")
    return host


def parse_since(value: str | None, now: dt.datetime | None = None) -> str | None:
    """`--since` as the ISO timestamp the collector expects: given as one, or as an age."""
    if value is None:
        return None
    age = _AGE.match(value.strip())
    if age is not None:
        seconds = float(age.group(1)) * _UNITS[age.group(2)]
        moment = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since: {value!r} is neither an ISO 8601 time nor an age such as 10m"
        ) from None
    return value


class _Printer:
    """Prints each message once (the stream and a listing may both carry it)."""

    def __init__(self, as_json: bool, memory: int = 10_000) -> None:
        self._json = as_json
        self._width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        self._seen: set[str] = set()
        self._order: collections.deque[str] = collections.deque()
        self._memory = memory

    def start(self, anything: bool) -> None:
        if self._json:
            return
        print(_event_table.header() if anything else "(no events)", flush=True)

    def show(self, message: Mapping[str, Any]) -> None:
        message_id = str(message.get("messageId"))
        if message_id in self._seen:
            return
        self._seen.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self._memory:
            self._seen.discard(self._order.popleft())
        line = json.dumps(message) if self._json else _event_table.row(message, self._width)
        print(line, flush=True)


def _get(http: urllib3.PoolManager, url: str, **options: Any) -> urllib3.BaseHTTPResponse:
    try:
        return http.request("GET", url, **options)
    except urllib3.exceptions.HTTPError as exc:
        raise unreachable(url, exc) from None


def _fetch(
    http: urllib3.PoolManager, host: str, params: Mapping[str, object]
) -> list[dict[str, Any]]:
    """The events `/api/events` returns for `params`, newest first."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    response = _get(http, f"{host}/api/events?{query}")
    if response.status == 404:
        raise CollectorError(f"{host} has no /api/events: is it a trackline collector?")
    try:
        document = json.loads(response.data)
    except ValueError:
        document = None
    if response.status != 200:
        detail = document.get("message") if isinstance(document, dict) else None
        raise CollectorError(f"the collector answered {response.status}: {detail or ''}".strip())
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        raise CollectorError(f"{host}/api/events did not answer with a list of events")
    return [event for event in events if isinstance(event, dict)]


def _export(
    http: urllib3.PoolManager, host: str, params: Mapping[str, object], as_json: bool
) -> None:
    """Print every event `params` match, oldest first, as the collector's export streams
    them: JSON lines exactly as stored, or a table; one chunk in memory at a time."""
    query = {k: v for k, v in params.items() if v is not None}
    url = f"{host}/api/events?" + urllib.parse.urlencode(
        {**query, "format": "ndjson", "order": "asc"}
    )
    response = _get(
        http,
        url,
        preload_content=False,
        timeout=urllib3.Timeout(connect=5.0, read=EXPORT_SILENCE),
    )
    try:
        kind = response.headers.get("Content-Type", "")
        if response.status != 200 or not kind.startswith("application/x-ndjson"):
            _refused(host, response.status, response.read(64 * 1024), kind)
        out = sys.stdout.buffer
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        if not as_json:
            print(_event_table.header(), flush=True)
        pending = b""
        for chunk in response.stream(256 * 1024):
            if as_json:
                out.write(chunk)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                out.write(_event_table.row(json.loads(line), width).encode() + b"\n")
        out.flush()
    except urllib3.exceptions.HTTPError as exc:
        raise CollectorError(
            f"the export broke off ({type(exc).__name__}): what was printed is incomplete"
        ) from None
    finally:
        response.release_conn()


def _refused(host: str, status: int, body: bytes, kind: str) -> None:
    """Raise the `CollectorError` for an export the collector did not give."""
    if status == 200:
        raise CollectorError(f"{host} cannot export (it answered {kind or 'no type'}): upgrade it")
    if status == 404:
        raise CollectorError(f"{host} has no /api/events: is it a trackline collector?")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    detail = document.get("message") if isinstance(document, dict) else None
    raise CollectorError(f"the collector answered {status}: {detail or ''}".strip())


def _open_stream(http: urllib3.PoolManager, host: str) -> urllib3.BaseHTTPResponse | None:
    """The live stream, or None when the collector has none (then we poll)."""
    response = _get(
        http,
        f"{host}/api/stream",
        preload_content=False,
        timeout=urllib3.Timeout(connect=5.0, read=STREAM_SILENCE),
    )
    if response.status == 200:
        return response
    response.drain_conn()
    if response.status == 404:
        return None
    raise CollectorError(f"the collector answered {response.status} for its live stream")


def _follow_stream(
    stream: urllib3.BaseHTTPResponse, params: Mapping[str, str], printer: _Printer
) -> None:
    for event, data in _server_sent_events(stream):
        if event == "lagged":
            print("(some events were skipped: this terminal fell behind)", file=sys.stderr)
        elif data and _matches(data, params):
            printer.show(json.loads(data))
    raise CollectorError("the collector closed the live stream")


def _server_sent_events(stream: urllib3.BaseHTTPResponse) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream; comments and ids are skipped."""
    pending = b""
    event = "message"
    data: list[str] = []
    try:
        for chunk in stream.stream(64 * 1024):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8").rstrip("\r")
                if not text:
                    if data:
                        yield event, "\n".join(data)
                    event, data = "message", []
                elif text.startswith("data:"):
                    data.append(text[5:].lstrip(" "))
                elif text.startswith("event:"):
                    event = text[6:].strip()
    except urllib3.exceptions.HTTPError as exc:
        raise CollectorError(f"the live stream broke off ({type(exc).__name__})") from None


def _matches(data: str, params: Mapping[str, str]) -> bool:
    """The `/api/events` filters, applied to one message of the stream."""
    message = json.loads(data)
    for option, field in FILTERS.items():
        if option in params and message.get(field) != params[option]:
            return False
    if "event" in params:
        name = message.get("event") if message.get("type") == "track" else message.get("name")
        if name != params["event"]:
            return False
    # SQLite's LIKE, which the collector uses for q, ignores ASCII case.
    return "q" not in params or params["q"].lower() in data.lower()


def _follow_polling(
    http: urllib3.PoolManager,
    host: str,
    params: Mapping[str, str],
    printer: _Printer,
    interval: float,
    listing: list[dict[str, Any]],
) -> None:
    latest = max((str(m.get("receivedAt", "")) for m in listing), default="")
    if not latest:
        latest = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    while True:
        time.sleep(interval)
        news = _fetch(http, host, {**params, "since": latest, "limit": POLL_LIMIT})
        for message in reversed(news):
            printer.show(message)
            latest = max(latest, str(message.get("receivedAt", "")))
