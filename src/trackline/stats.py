"""Delivery accounting: the counters, the closed set of drop reasons, and the snapshot users read.

The promise these counters keep is that nothing disappears unaccounted:

    enqueued == delivered + dropped + queued + in_flight

holds in every snapshot, because every change to the counters and to the buffer happens under
the one lock the buffer and the counters share.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
from collections.abc import Mapping


class DropReason(enum.StrEnum):
    """Why a message that a call accepted was not delivered. The set is closed."""

    QUEUE_FULL = "queue_full"
    """The buffer was full when the call was made (or stayed full for `block_timeout`)."""
    TOO_LARGE = "too_large"
    """The server answered 413 for a batch of this message alone."""
    REJECTED = "rejected"
    """The server refused it for good: 400, 404, 422 or another non-retryable answer, or a
    per-message rejection inside a 200 answer."""
    UNAUTHORIZED = "unauthorized"
    """The server answered 401 or 403: the write key is wrong or revoked."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Every one of `max_retries` retries failed."""
    DELIVERY_TIMEOUT = "delivery_timeout"
    """`delivery_timeout` ran out (or a Retry-After reached past it) before a success."""
    SHUTDOWN_TIMEOUT = "shutdown_timeout"
    """Still queued or in flight when `shutdown()` ran out of time."""
    CLOSED = "closed"
    """The call came after `shutdown()`."""
    SEND_DISABLED = "send_disabled"
    """The client was made with `send=False`: validated and counted, never sent."""
    SPOOL_FULL = "spool_full"
    """Durable mode: the spool was at `max_spool_bytes`."""
    STORE_UNAVAILABLE = "store_unavailable"
    """Durable mode: the spool could not be written: its file could not be created, the disk
    is full, a write failed, or an unexpected error."""
    EXPIRED = "expired"
    """Durable mode: older than `max_age` when its turn came."""
    STORE_CORRUPT = "store_corrupt"
    """Durable mode: lost with a spool file that could not be read and was quarantined."""


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A consistent snapshot of a client's accounting.

    `enqueued` counts every message a call accepted (validated and given a message id);
    each one is, at any moment, exactly one of delivered, dropped (by reason), queued or in
    flight.
    """

    enqueued: int
    delivered: int
    dropped: Mapping[str, int]
    queued: int
    in_flight: int
    retries: int
    batches: int
    bytes_sent: int

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.dropped.values())

    @property
    def unaccounted(self) -> int:
        """Always zero; a non-zero value would be a trackline bug."""
        return self.enqueued - (self.delivered + self.dropped_total + self.queued + self.in_flight)


class Counters:
    """Mutable counters guarded by `lock`, which the buffer shares so snapshots are exact.

    The buffer changes the fields with `lock` held, together with what it stores; the
    `count_*` methods are for everyone else and take the lock themselves.
    """

    def __init__(self, lock: threading.Lock | threading.RLock | None = None) -> None:
        self.lock = lock if lock is not None else threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start from zero (a forked child starts its own accounting)."""
        self.enqueued = 0
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self.queued = 0
        self.in_flight = 0
        self.retries = 0
        self.batches = 0
        self.bytes_sent = 0

    def add_dropped(self, reason: str, count: int) -> None:
        """Count `count` messages dropped for `reason` (call with `lock` held)."""
        key = str(reason)
        self.dropped[key] = self.dropped.get(key, 0) + count

    def count_refused(self, reason: str) -> None:
        """Count one message accepted and dropped at once, never queued."""
        with self.lock:
            self.enqueued += 1
            self.add_dropped(reason, 1)

    def count_retry(self) -> None:
        """Count one retried request."""
        with self.lock:
            self.retries += 1

    def count_request(self, body_bytes: int, delivered: bool) -> None:
        """Count one request sent (and the batch it delivered)."""
        with self.lock:
            self.bytes_sent += body_bytes
            if delivered:
                self.batches += 1

    def snapshot(self) -> Stats:
        """A consistent copy of the counters."""
        with self.lock:
            return Stats(
                enqueued=self.enqueued,
                delivered=self.delivered,
                dropped=types.MappingProxyType(dict(self.dropped)),
                queued=self.queued,
                in_flight=self.in_flight,
                retries=self.retries,
                batches=self.batches,
                bytes_sent=self.bytes_sent,
            )
