"""`trackline demo`: the whole path on one machine. A collector starts in-process on a free
loopback port with a temporary database, a `trackline.Client` sends it the seed's examples,
and the command prints what the collector stored and what the client counted."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import urllib3

from trackline.cli import _event_table

HELP = "send example events to a local collector and print what it stored"
WRITE_KEY = "demo-write-key"


def register(subparsers: Any) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser("demo", help=HELP, description=HELP)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the collector running afterwards (until Ctrl-C) and print its URL",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port of the collector (default: any free one)"
    )
    parser.set_defaults(run=run)


def send_examples(client: Any) -> int:
    """The seed library's examples, one call each; returns how many calls were made."""
    calls: list[Callable[[], object]] = [
        lambda: client.identify(
            "019mr8mf4r",
            {
                "name": "Tom Smykowski",
                "email": "tom@initech.com",
                "friends": 29,
                "address": {"street": "123 Fake Street", "city": "Boston"},
            },
        ),
        lambda: client.track(
            "019mr8mf4r",
            "Item Purchased",
            {"revenue": 39.95, "shipping": "2-day"},
            context={"ip": "12.212.12.49", "language": "en-us"},
        ),
        lambda: client.page(
            "019mr8mf4r",
            "Login",
            {"path": "/login", "title": "Initech Login"},
            category="Auth",
            context={"Google Analytics": {"clientId": "GA1.2.3"}},
        ),
        lambda: client.screen("019mr8mf4r", "Register", {"type": "facebook"}),
        lambda: client.group(
            "019mr8mf4r",
            "initech",
            {"name": "Initech, Inc.", "website": "http://www.initech.com"},
        ),
        lambda: client.track(None, "Anonymous Event", anonymous_id="anonymous_user"),
        lambda: client.alias("anonymous_user", "identified@gmail.com"),
        lambda: client.identify("identified@gmail.com", {"plan": "Free"}),
        lambda: client.track("identified@gmail.com", "Identified Action"),
        lambda: client.track(
            "sadi89e2jd",
            "Workout Logged",
            {"distance": "10 miles", "city": "Boston"},
            timestamp=datetime(2010, 1, 18, tzinfo=UTC),
        ),
        lambda: client.identify(
            "hj2kf92ds212",
            {"email": "tom@initech.com", "name": "Tom Smykowski"},
            integrations={"All": False, "KISSmetrics": True},
        ),
        lambda: client.page(None, "Login", anonymous_id="some-id"),
    ]
    for call in calls:
        call()
    return len(calls)


def table(events: Sequence[Mapping[str, Any]]) -> str:
    """Stored events as a text table, in the order they were stored."""
    return "\n".join([_event_table.header(), *(_event_table.row(event) for event in events)])


def _stats_line(stats: Any) -> str:
    dropped = ", ".join(f"{reason} {count}" for reason, count in stats.dropped.items()) or "none"
    return (
        f"client stats: enqueued {stats.enqueued}, delivered {stats.delivered}, "
        f"dropped {dropped}, retries {stats.retries}, batches {stats.batches}, "
        f"bytes sent {stats.bytes_sent}, queued {stats.queued}, in flight {stats.in_flight}"
    )


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every example was delivered and stored."""
    try:
        from trackline.collector import start
    except ImportError as exc:
        print(
            f"trackline demo needs the collector extra ({exc.name} is missing): "
            "pip install 'trackline[collector]'",
            file=sys.stderr,
        )
        return 2
    import trackline

    with tempfile.TemporaryDirectory(prefix="trackline-demo-") as directory:
        collector = start(Path(directory) / "demo.sqlite3", port=args.port)
        try:
            print(f"collector listening on {collector.url} (temporary database)")
            client = trackline.Client(WRITE_KEY, host=collector.url)
            try:
                sent = send_examples(client)
                delivered = client.flush(timeout=10.0)
                stats = client.stats
            finally:
                client.shutdown(timeout=5.0)
            print(f"sent {sent} events through trackline.Client; flush() -> {delivered}\n")
            answer = urllib3.request("GET", f"{collector.url}/api/events?limit=1000")
            events = list(reversed(orjson.loads(answer.data)["events"]))
            print(table(events))
            print()
            print(_stats_line(stats))
            print(f"collector stored {len(events)} events")
            if args.serve:
                print(
                    f"\ncollector still serving on {collector.url}; watch events arrive at "
                    f"{collector.url}/debugger (Ctrl-C to stop)",
                    flush=True,
                )
                _wait_for_interrupt()
        finally:
            collector.stop()
    ok = delivered and stats.delivered == sent and len(events) == sent
    return 0 if ok else 1
