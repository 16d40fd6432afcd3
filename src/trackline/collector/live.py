"""In-process publish/subscribe of newly stored events, for live views (`GET /api/stream`).

The storage writer thread publishes each committed group of events; subscribers are coroutines
on an event loop. A subscriber that falls behind is not allowed to hold memory: past its
limit its pending events are dropped and it is told it lagged, so it can reload from the
store instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
from collections.abc import Sequence
from typing import Final

#: Events a subscriber may have waiting before it is marked as lagging.
DEFAULT_MAX_PENDING: Final = 10_000
#: Characters of events a subscriber may have waiting before it is marked as lagging: events
#: are up to 32 KB each, so a count alone would let one slow subscriber hold 300 MB.
MAX_PENDING_CHARS: Final = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class LiveEvent:
    """A stored event: its row id in the store (increasing), its message JSON and its source
    (the key id of the write key it came with)."""

    id: int
    body: str
    source: str


@dataclasses.dataclass(frozen=True, slots=True)
class Lagged:
    """Marks a gap: `missed` events were dropped because the subscriber fell behind, at
    least; a gap of unknown size (the store lost sight of other processes' events for a
    while) counts one."""

    missed: int


class Subscription:
    """One subscriber's queue; read it with `next()` on the loop that created it."""

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop, max_pending: int) -> None:
        self._hub = hub
        self._loop = loop
        self._max_pending = max_pending
        self._pending: collections.deque[LiveEvent] = collections.deque()
        self._pending_chars = 0
        self._missed = 0
        self._closed = False
        self._ready = asyncio.Event()

    def _deliver(self, events: Sequence[LiveEvent]) -> None:
        """Runs on the subscriber's loop."""
        if self._closed:
            return
        chars = sum(len(event.body) for event in events)
        if (
            len(self._pending) + len(events) > self._max_pending
            or self._pending_chars + chars > MAX_PENDING_CHARS
        ):
            self._missed += len(self._pending) + len(events)
            self._pending.clear()
            self._pending_chars = 0
        else:
            self._pending.extend(events)
            self._pending_chars += chars
        self._ready.set()

    def _gap(self) -> None:
        """Runs on the subscriber's loop."""
        if self._closed:
            return
        self._missed += len(self._pending) + 1
        self._pending.clear()
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    def post(self, events: Sequence[LiveEvent]) -> None:
        """Hand `events` over from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, events)
        except RuntimeError:  # the subscriber's loop is closed: nobody is listening
            self._hub.unsubscribe(self)

    def post_gap(self) -> None:
        """Tell the subscriber, from any thread, that it may have missed events."""
        try:
            self._loop.call_soon_threadsafe(self._gap)
        except RuntimeError:
            self._hub.unsubscribe(self)

    def post_end(self) -> None:
        """End the subscription from any thread; `next()` then returns None."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(self._end)

    async def next(self, timeout: float) -> list[LiveEvent] | Lagged | None:
        """The events waiting (at least one), a `Lagged` gap, an empty list when `timeout`
        passed with nothing new, or None once the hub closed."""
        if not self._pending and not self._missed and not self._closed:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        if self._missed:
            missed, self._missed = self._missed, 0
            return Lagged(missed)
        if self._pending:
            events = list(self._pending)
            self._pending.clear()
            self._pending_chars = 0
            return events
        return None if self._closed else []

    def close(self) -> None:
        """Stop receiving events."""
        self._closed = True
        self._hub.unsubscribe(self)


class EventHub:
    """Fans newly stored events out to subscribers; `publish` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens: the writer skips reading events back when nobody does."""
        return bool(self._subscriptions)

    def subscribe(self, max_pending: int = DEFAULT_MAX_PENDING) -> Subscription:
        """A new subscription bound to the running event loop."""
        subscription = Subscription(self, asyncio.get_running_loop(), max_pending)
        with self._lock:
            if self._closed:
                subscription._end()
            else:
                self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget `subscription`; unknown ones are ignored."""
        with self._lock:
            self._subscriptions.discard(subscription)

    def publish(self, events: Sequence[LiveEvent]) -> None:
        """Give `events` to every subscriber."""
        if not events:
            return
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.post(events)

    def gap(self) -> None:
        """Tell every subscriber that events may have been missed, so it reloads."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.post_gap()

    def close(self) -> None:
        """End every subscription, now and later: lets a server shut down with streams open."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
            self._subscriptions.clear()
        for subscription in subscriptions:
            subscription.post_end()
