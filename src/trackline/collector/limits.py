"""How much of the collector one request, one client or everyone together may hold at once.

Every request that holds memory or a database connection while it waits on the network (a
body being read, a listing being sent, a live stream) takes a place in a `Gate` first, and is
answered 503 with `Retry-After` when there is none: the collector sheds load instead of
queueing without end. A gate may also cap what one client address holds, so clients that
are slow on purpose fill their own share, never everyone's.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Final

#: Ingest requests whose header write key was checked, being read, decoded and committed
#: (each body up to 500 KB): bounds the memory of bodies in flight.
INGEST_REQUESTS: Final = 256
#: Ingest requests whose key is in the body (analytics.js sends it there), so it is known only
#: once the body is read: a pool of their own, and a share per client address, so that slow
#: requests with wrong keys cannot take the places of requests with right ones.
BODY_KEY_REQUESTS: Final = 128
BODY_KEY_REQUESTS_PER_CLIENT: Final = 16
#: Reads (`/api/events`, `/api/stats`, ...) at once: each holds a database connection while it
#: streams its answer.
READS: Final = 16
READS_PER_CLIENT: Final = 8
#: Live streams (`/api/stream`) open at once.
SUBSCRIBERS: Final = 64
SUBSCRIBERS_PER_CLIENT: Final = 16


class Gate:
    """At most `limit` holders at once, and at most `per_client` for one client address.

    Used from the event loop's thread only (ASGI runs every request there), so it needs no
    lock: `enter` and `leave` never wait.
    """

    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit = limit
        self.per_client = per_client
        self.held = 0
        self._by_client: collections.Counter[str | None] = collections.Counter()

    def enter(self, client: str | None) -> bool:
        """Take a place for `client` (None: unknown, counted together); False when full."""
        if self.held >= self.limit:
            return False
        if self.per_client is not None and self._by_client[client] >= self.per_client:
            return False
        self.held += 1
        self._by_client[client] += 1
        return True

    def leave(self, client: str | None) -> None:
        """Give back a place taken for `client`."""
        self.held -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]

    @contextlib.contextmanager
    def place(self, client: str | None) -> Iterator[bool]:
        """`enter` for the duration of a `with` block; yields whether a place was taken."""
        entered = self.enter(client)
        try:
            yield entered
        finally:
            if entered:
                self.leave(client)
