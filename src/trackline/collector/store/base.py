"""What every collector store engine shares: the values it takes and returns, its error, and
the interface the app, the server and the destination routers use, so that an engine is
chosen in one place. The delivery jobs' values and rules are in `jobs.py`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Generator, Sequence
from typing import Final, Protocol

from trackline.collector.ingest import Row
from trackline.collector.live import EventHub
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    Routes,
    Settlement,
)

#: The filters no index serves (`q` and `source`; on SQLite also `user_id` and
#: `anonymous_id`) look at this many events (by row id) a page: what one page can cost does
#: not grow with the store.
MAX_SCAN_ROWS: Final = 50_000
#: Seconds of database work one read may take (its answer's transfer not counted) before
#: it is stopped with `ReadTooCostly`.
READ_BUDGET_SECONDS: Final = 5.0


class StorageError(Exception):
    """The store cannot take writes right now (locked, full, failing disk, closed)."""


class RowsRefused(Exception):
    """The store cannot hold a request's rows themselves (a value it has no room for): the
    request failed alone, and sending it again cannot help."""


class ReadTooCostly(Exception):
    """A read was stopped after `READ_BUDGET_SECONDS` of database work."""


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """How a request's rows fared: stored now, or already stored before (same messageId)."""

    accepted: int
    duplicates: int


@dataclasses.dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of `GET /api/events`; `source` is a key id, `since` a timestamp in the stored
    form; `q` and `source` (on SQLite also `user_id` and `anonymous_id`) look at
    `MAX_SCAN_ROWS` events of a page only (its window).

    A page of a walk through the store: newest first, from the top or below `before_id`; or
    with `ascending`, oldest first, above `after_id` and up to `until_id` (which the walk's
    first page fixes at the newest row id then, so that a walk ends however fast events
    arrive). Row ids only grow, so a walk never sees an event twice, and every event stored
    before it began is on some page unless the retention deleted it first.
    `Store.event_pieces` returns the next page's query."""

    type: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    source: str | None = None
    q: str | None = None
    since: str | None = None
    limit: int = 100
    before_id: int | None = None
    after_id: int | None = None
    until_id: int | None = None
    ascending: bool = False

    @property
    def windowed(self) -> bool:
        """Whether a filter no index serves is set, so a page scans a window of
        `MAX_SCAN_ROWS` events and may end short of `limit` with more pages to come. An
        engine may window more filters (SQLite: `user_id` and `anonymous_id` too)."""
        return bool(self.q) or self.source is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """Totals for `GET /api/stats`."""

    events: int
    by_type: dict[str, int]
    by_source: dict[str, int]
    duplicates: int
    rejected: int
    #: Events stored with a malformed `integrations` (not an object, or `All` not a
    #: boolean): routed to no destination.
    unroutable: int = 0


class Store(Protocol):
    """An event store: group-committed writes with dedupe by messageId, counters, reads, and
    the hub that publishes what was committed to live views. Safe to use from any thread."""

    hub: EventHub

    @property
    def key_secret(self) -> bytes:
        """Random bytes (32) made once when the store was created and kept in it, the same
        for every process that opens the store: key ids (`access.key_id`) are keyed with
        them, so every collector sharing the store names a write key the same way. A store
        written before key ids existed has its raw keys rewritten to key ids when opened."""

    @property
    def pending_rows(self) -> int:
        """Rows handed to the writer and not yet committed or failed."""

    @property
    def healthy(self) -> bool:
        """False when the last write failed (until one succeeds) or the store is closed."""

    def submit(
        self, rows: Sequence[Row], rejected: int = 0, routes: Routes | None = None
    ) -> asyncio.Future[WriteResult]:
        """Write `rows` and count `rejected` messages from a coroutine; 200 only after this.

        `routes[i]` names the destinations `rows[i]` is owed to: one job per name is written
        in the same transaction, for rows stored now only (not for duplicates).

        Fails with `StorageError` when the store cannot write (then nothing of the request is
        stored), or `RowsRefused` when these rows alone cannot be stored: one request's rows
        never fail the other requests committed with them."""

    def write(
        self,
        rows: Sequence[Row],
        rejected: int = 0,
        timeout: float | None = None,
        routes: Routes | None = None,
    ) -> WriteResult:
        """Write `rows` (and their jobs) from a plain thread and wait for the commit."""

    def clear(self, timeout: float | None = None) -> int:
        """Delete every event and reset the counters; returns how many events there were."""

    def events(self, query: EventQuery, *, meta: bool = False) -> bytes:
        """Stored messages matching `query` (one page), newest first unless `ascending`, as
        one JSON array; with `meta`, each is `{"id": row id, "source": key id, "message":
        {...}}`. The whole listing at once: `event_pieces` for large ones."""

    def event_pieces(
        self, query: EventQuery, *, meta: bool = False, lines: bool = False
    ) -> Generator[bytes, None, EventQuery | None]:
        """What `events` returns, in pieces of tens of KB, so that a large listing is never
        held whole (what the read API streams); with `lines`, each item ends with a newline
        and there are no brackets or commas (NDJSON).

        The generator's return value is the query of the next page (`before_id`, or
        `after_id` and `until_id`, moved on), or None once the walk has reached its end. A
        page shorter than `limit` is not the end when its query is `windowed`: it looked at
        its window only, and the next page looks at the window below (or above).

        The reading starts with the first piece and holds a database connection until the
        generator is exhausted or closed: close it. Raises `ReadTooCostly` past the budget."""

    def event(self, message_id: str) -> bytes | None:
        """The stored message with `message_id`, or None."""

    def stats(self) -> Stats:
        """Totals by type and by source (key ids), and the duplicate and rejected counts."""

    # -- delivery jobs (see jobs.py for the rules) -----------------------------------------

    def claim(self, destination: str, limit: int, lease: float) -> list[Job]:
        """Up to `limit` due jobs of `destination`, oldest first, held for `lease` seconds.

        Skips jobs another claim holds and jobs of a user whose earlier job is held or waits
        for a retry. Raises `StorageError` when the store cannot be read."""

    def settle(self, settlements: Sequence[Settlement], timeout: float | None = None) -> int:
        """End claims in one transaction; returns how many were still held by their claim
        (the others changed nothing). Raises `StorageError` when nothing could be written."""

    def destination_counts(self) -> list[DestinationCounts]:
        """Every destination that ever had a job: jobs by state, last error, last success."""

    def deliveries(self, message_id: str) -> list[EventDelivery] | None:
        """Where the event `message_id` stands with each destination it was queued for
        (sorted by destination), or None when no such event is stored."""

    def replay(
        self,
        destination: str,
        *,
        failed_only: bool = False,
        since: str | None = None,
        selects: Callable[[str], bool] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Queue stored events for `destination` again; returns how many jobs were queued.

        `failed_only`: its dead letters go back to the queue with attempts reset. Otherwise
        every stored event that `selects` (given the stored JSON; None: all) approves and
        that is not queued for the destination now gets a job (backfill or resend; a dead
        letter among them is moved back). `since` (stored timestamp form) keeps events
        received at or after it."""

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then stop; idempotent."""
