"""The libraries under test behind one small interface: build a client, track, flush, version.

Each library keeps its own defaults. The only option set for all of them alike is the queue
size where a scenario needs every event to fit (`queue_size`), since none of the peers can make
a caller wait for room: without it they would drop what outruns their delivery, and the run
would measure drops instead of throughput. `trackline-tuned` is trackline with one non-default
option, shown under the table: `workers=1`, one request in flight at a time like the peers, to
show what the default's extra workers bring.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from typing import Any, Final

#: The libraries the runner knows, in table order.
LIBRARIES: Final = ("trackline", "trackline-tuned", "segment", "posthog")
#: PyPI distribution of each library, for its version and for a clear error when missing.
DISTRIBUTIONS: Final = {
    "trackline": "trackline",
    "trackline-tuned": "trackline",
    "segment": "segment-analytics-python",
    "posthog": "posthog",
}
#: What `trackline-tuned` changes, shown under the table.
TUNED_OPTIONS: Final = {"workers": 1}
EVENT: Final = "Item Purchased"
WRITE_KEY: Final = "bench-write-key"
#: Longest a `flush` may wait; the slowest peer needs about a minute for 100k events at 50 ms.
FLUSH_SECONDS: Final = 600.0

#: `track(user_id, event, properties)`; the return value tells whether the library accepted it.
#: trackline and segment take exactly these arguments, so the runner calls their bound method
#: with no wrapper in between; posthog's `capture` needs one (about 0.1% of its cost).
Track = Callable[[str, str, dict[str, Any]], object]


@dataclasses.dataclass(frozen=True)
class Peer:
    """A live client of one library."""

    name: str
    track: Track
    #: Send what is queued now, partial batches too, and wait (bounded) until it is sent.
    flush: Callable[[], object]
    #: Whether a `track` return value means the event was accepted (not dropped).
    accepted: Callable[[object], bool]


def version(name: str) -> str:
    """The installed version of a library's distribution."""
    return importlib.metadata.version(DISTRIBUTIONS[name])


def make(name: str, host: str, queue_size: int | None = None) -> Peer:
    """A client of library `name` sending to `host` (an origin such as http://127.0.0.1:80)."""
    if name.startswith("trackline"):
        return _trackline(host, queue_size, tuned=name == "trackline-tuned")
    if name == "segment":
        return _segment(host, queue_size)
    if name == "posthog":
        return _posthog(host, queue_size)
    raise ValueError(f"unknown library {name!r}; known: {', '.join(LIBRARIES)}")


def _trackline(host: str, queue_size: int | None, *, tuned: bool) -> Peer:
    import trackline

    options: dict[str, Any] = dict(TUNED_OPTIONS) if tuned else {}
    if queue_size is not None:
        options["max_queue_size"] = queue_size
        options["max_queue_bytes"] = queue_size * 2048
    client = trackline.Client(WRITE_KEY, host=host, **options)
    return Peer(
        name="trackline",
        track=client.track,
        flush=lambda: client.flush(FLUSH_SECONDS),
        accepted=_not_none,
    )


def _segment(host: str, queue_size: int | None) -> Peer:
    from segment.analytics import Client

    options: dict[str, Any] = {} if queue_size is None else {"max_queue_size": queue_size}
    client = Client(WRITE_KEY, host=host, **options)

    def accepted(result: object) -> bool:
        return isinstance(result, tuple) and bool(result[0])

    # segment's flush() has no timeout; the runner's own deadline on the process bounds it.
    return Peer(name="segment", track=client.track, flush=client.flush, accepted=accepted)


def _posthog(host: str, queue_size: int | None) -> Peer:
    from posthog import Posthog

    options: dict[str, Any] = {} if queue_size is None else {"max_queue_size": queue_size}
    client = Posthog(WRITE_KEY, host=host, **options)
    method = client.capture

    def track(user_id: str, event: str, properties: dict[str, Any]) -> object:
        return method(event, distinct_id=user_id, properties=properties)

    return Peer(
        name="posthog",
        track=track,
        flush=lambda: client.flush(timeout_seconds=FLUSH_SECONDS),
        accepted=_not_none,
    )


def _not_none(result: object) -> bool:
    return result is not None
