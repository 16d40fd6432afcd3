"""What every collector store engine shares: the values it takes and returns, its error, and
the interface the app and the server use, so that an engine is chosen in one place."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Protocol

from trackline.collector.ingest import Row
from trackline.collector.live import EventHub


class StorageError(Exception):
    """The store cannot take writes right now (locked, full, failing disk, closed)."""


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """How a request's rows fared: stored now, or already stored before (same messageId)."""

    accepted: int
    duplicates: int


@dataclasses.dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of `GET /api/events`; `since` is a timestamp in the stored form."""

    type: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    source: str | None = None
    q: str | None = None
    since: str | None = None
    limit: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """Totals for `GET /api/stats`."""

    events: int
    by_type: dict[str, int]
    by_source: dict[str, int]
    duplicates: int
    rejected: int


class Store(Protocol):
    """An event store: group-committed writes with dedupe by messageId, counters, reads, and
    the hub that publishes what was committed to live views. Safe to use from any thread."""

    hub: EventHub

    @property
    def pending_rows(self) -> int:
        """Rows handed to the writer and not yet committed or failed."""

    @property
    def healthy(self) -> bool:
        """False when the last write failed (until one succeeds) or the store is closed."""

    def submit(self, rows: Sequence[Row], rejected: int = 0) -> asyncio.Future[WriteResult]:
        """Write `rows` and count `rejected` messages from a coroutine; 200 only after this."""

    def write(
        self, rows: Sequence[Row], rejected: int = 0, timeout: float | None = None
    ) -> WriteResult:
        """Write `rows` from a plain thread and wait for the commit."""

    def clear(self, timeout: float | None = None) -> int:
        """Delete every event and reset the counters; returns how many events there were."""

    def events(self, query: EventQuery, *, meta: bool = False) -> bytes:
        """Stored messages matching `query`, newest first, as one JSON array."""

    def event(self, message_id: str) -> bytes | None:
        """The stored message with `message_id`, or None."""

    def stats(self) -> Stats:
        """Totals by type and by source, and the duplicate and rejected counts."""

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop; idempotent."""
