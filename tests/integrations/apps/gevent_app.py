"""A plain WSGI app for `gunicorn -k gevent --preload`: trackline's default client made in the
master before the fork (and before gevent patches anything), used from greenlets after it.

Settings come from `TEST_APP_*` environment variables: `TEST_APP_TRACKLINE_HOST` (the
collector), `TEST_APP_FLUSH_INTERVAL`. gevent's monitor thread (`GEVENT_MONITOR_THREAD_ENABLE`,
set by the test) reports every time the hub was blocked; `/blocked` lists the blocked stacks
that run through trackline's code.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import trackline

trackline.init(
    "gevent-key",
    host=os.environ["TEST_APP_TRACKLINE_HOST"],
    flush_interval=float(os.environ.get("TEST_APP_FLUSH_INTERVAL", "0.2")),
)
trackline.track("server", "App Loaded", {"pid": os.getpid()})

_blocked: list[str] = []
_watching = False


def _watch_the_hub() -> None:
    """Record the hub's blocking reports (in the worker, once gevent is in charge)."""
    global _watching
    if _watching:
        return
    _watching = True
    import gevent.events

    def record(event: object) -> None:
        if isinstance(event, gevent.events.EventLoopBlocked):
            # The stack of the greenlet that held the hub, without the rest of the report.
            report = "\n".join(event.info)
            blocked = report.split("Blocked Stack", 1)[-1].split("\nInfo:", 1)[0]
            if f"{os.sep}trackline{os.sep}" in blocked:
                _blocked.append(blocked)

    gevent.events.subscribers.append(record)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _watch_the_hub()
    path = environ["PATH_INFO"]
    if path.startswith("/hit/"):
        trackline.track("visitor", "Gevent Hit", {"name": path[5:], "pid": os.getpid()})
        body = str(os.getpid()).encode()
    elif path == "/blocked":
        body = json.dumps(_blocked).encode()
    elif path == "/state":
        client = trackline.get_client()
        stats = client.stats
        body = json.dumps(
            {
                "delivered": stats.delivered,
                "queued": stats.queued,
                "thread": type(threading.current_thread()).__module__,
            }
        ).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
