"""Accounting for fault tests: what the app sent, what the store holds, what was dropped and why.

A `Ledger` makes every call itself, with its own `messageId` (uuid4) and a `properties.seq`, and
is the client's `on_error` callback, so it knows each message by id from the call to its end.
`Ledger.settle` compares three views of one run (the calls, the client's `stats`, and the rows a
store holds) and returns an `Account`: one line of figures, and `assert_exact()`, which fails
with that line when anything is unaccounted:

- every message a call accepted was stored or reported dropped with a reason, never neither;
- the client's own counters agree (`stats.unaccounted == 0`, per-reason drops match `on_error`);
- the store holds each message at most once and nothing this test did not send.

A message both stored and reported dropped is the one ambiguity at-least-once delivery allows
(the server committed, the answer was lost, the retries ran out); it is counted apart as
`stored_and_dropped` and only tolerated where a test says so.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import trackline


@runtime_checkable
class Store(Protocol):
    """Where delivered messages end up: the message id of every stored row, duplicates kept."""

    def stored_ids(self) -> list[str]: ...


class CaptureStore:
    """The capture server as a store: every message of every request answered 2xx.

    The capture server does not dedupe, so a batch whose answer was lost and which was then sent
    again is stored twice: `dup_stored` there measures what reached the wire twice.
    """

    def __init__(self, server: Any) -> None:
        self.server = server

    def stored_ids(self) -> list[str]:
        return list(self.server.delivered_ids())


class CollectorStore:
    """The collector's SQLite file as a store, read on a connection of its own.

    Its `UNIQUE(message_id)` key makes a duplicate row impossible; what reached it twice is
    counted in `wire_duplicates()` instead (the collector's own duplicate counter).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path

    def _query(self, sql: str) -> list[Any]:
        conn = sqlite3.connect(self.path, timeout=5.0)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self._query("SELECT message_id FROM events ORDER BY id")]

    def bodies(self, message_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored JSON of each of `message_ids` that is stored."""
        wanted = list(message_ids)
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            conn = sqlite3.connect(self.path, timeout=5.0)
            try:
                rows = conn.execute(
                    f"SELECT message_id, body FROM events WHERE message_id IN ({marks})", part
                ).fetchall()
            finally:
                conn.close()
            found.update((message_id, body.encode()) for message_id, body in rows)
        return found

    def wire_duplicates(self) -> int:
        """Messages the collector received again after storing them (resent batches)."""
        return int(self._query("SELECT duplicates FROM totals")[0][0])


class PostgresCollectorStore:
    """The collector's PostgreSQL database as a store, read on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _query(self, sql: str) -> list[Any]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self._query("SELECT message_id FROM trackline.events")]

    def wire_duplicates(self) -> int:
        """Messages the collectors received again after storing them (resent batches)."""
        return int(self._query("SELECT coalesce(sum(duplicates), 0) FROM trackline.totals")[0][0])


#: Drop reasons for messages that may have reached the server before the client gave up on
#: them; one of these can be stored and dropped at once. Any other reason never can.
MAY_HAVE_ARRIVED = frozenset({"shutdown_timeout", "delivery_timeout", "retries_exhausted"})


@dataclasses.dataclass(frozen=True)
class Account:
    """The figures of one run, settled; `str()` is the one-line report."""

    name: str
    sent: int
    accepted: int
    stored: int
    stored_rows: int
    dropped: Mapping[str, int]
    reported: Mapping[str, int]
    lost: tuple[str, ...]
    stored_and_dropped_by_reason: Mapping[str, int]
    stray: int
    stats: trackline.Stats
    double_reports: int

    @property
    def dup_stored(self) -> int:
        return self.stored_rows - self.stored - self.stray

    @property
    def stored_and_dropped(self) -> int:
        return sum(self.stored_and_dropped_by_reason.values())

    @property
    def unaccounted(self) -> int:
        """Sent messages neither stored nor dropped with a reason (zero in a correct run)."""
        return len(self.lost)

    def __str__(self) -> str:
        drops = ", ".join(f"{reason}={count}" for reason, count in sorted(self.dropped.items()))
        return (
            f"{self.name}: sent={self.sent} stored={self.stored} dropped={{{drops}}} "
            f"dup_stored={self.dup_stored} stored_and_dropped={self.stored_and_dropped} "
            f"unaccounted={self.unaccounted} retries={self.stats.retries} "
            f"batches={self.stats.batches} stray={self.stray}"
        )

    def assert_exact(
        self, *, dup_stored: int = 0, stored_and_dropped_allowed: bool = False
    ) -> None:
        """Every message accounted for exactly once, in the store, the counters and callbacks.

        `dup_stored` is the number of duplicate rows expected: zero for a store that dedupes;
        for the capture server, which stores what it is sent, the number of messages resent
        after a lost answer. `stored_and_dropped_allowed` tolerates messages stored after the
        client gave up on them, for reasons where that can happen (`MAY_HAVE_ARRIVED`).
        """
        stats = self.stats
        line = str(self)
        assert stats.unaccounted == 0, f"client counters do not add up: {stats} | {line}"
        assert (stats.queued, stats.in_flight) == (0, 0), f"not settled: {stats} | {line}"
        assert stats.enqueued == self.sent, f"enqueued {stats.enqueued} != sent | {line}"
        assert not self.lost, f"lost without a reason: {self.lost[:5]} | {line}"
        assert self.dup_stored == dup_stored, f"expected {dup_stored} duplicate rows | {line}"
        assert self.stray == 0, f"stored but never sent | {line}"
        assert self.double_reports == 0, f"a message reported dropped twice | {line}"
        assert dict(self.reported) == dict(self.dropped), (
            f"on_error saw {dict(self.reported)}, counters say {dict(self.dropped)} | {line}"
        )
        both = dict(self.stored_and_dropped_by_reason)
        if not stored_and_dropped_allowed:
            assert not both, f"stored yet reported dropped: {both} | {line}"
        assert both.keys() <= MAY_HAVE_ARRIVED, f"stored though never sent: {both} | {line}"
        assert stats.delivered == self.stored - self.stored_and_dropped, (
            f"delivered {stats.delivered} != stored and not dropped | {line}"
        )


class Ledger:
    """Makes the calls of one test and hears of every drop (pass `ledger.on_error` to Client)."""

    def __init__(self, name: str = "run") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.sent: list[str] = []
        self._ids: dict[str, str] = {}
        self.accepted: set[str] = set()
        self.drops: dict[str, str] = {}
        self._double_reports = 0
        self.accounts: list[Account] = []

    def on_error(self, error: Any, messages: list[dict[str, Any]]) -> None:
        """The client's `on_error`: remembers why each message was dropped."""
        with self._lock:
            for message in messages:
                # Keep the ledger's own string, not the decoded one: memory tests trace what
                # trackline allocates, and the decoded copy would be charged to it.
                message_id = self._ids.get(message["messageId"], message["messageId"])
                if message_id in self.drops:
                    self._double_reports += 1
                self.drops[message_id] = str(error.reason)

    def track(
        self, client: trackline.Client, properties: Mapping[str, Any] | None = None
    ) -> str | None:
        """One `track` call with a fresh messageId and the next `seq`; returns what it did."""
        seq = next(self._seq)
        message_id = str(uuid.uuid4())
        with self._lock:
            self.sent.append(message_id)
            self._ids[message_id] = message_id
        result = client.track(
            "user", "Fault Test", {"seq": seq, **(properties or {})}, message_id=message_id
        )
        if result is not None:
            with self._lock:
                self.accepted.add(message_id)
        return result

    def reserve(self, count: int) -> list[str]:
        """`count` fresh message ids, counted as sent; for tests that make the calls themselves
        (in a tight loop, or in another process) and pass each as `message_id`."""
        ids = [str(uuid.uuid4()) for _ in range(count)]
        with self._lock:
            self.sent.extend(ids)
            self._ids.update(zip(ids, ids, strict=True))
        return ids

    def adopt(self, sent: Iterable[str], drops: Mapping[str, str]) -> None:
        """Take in what another process sent and what it was told was dropped, by message id."""
        ids = list(sent)
        with self._lock:
            self.sent.extend(ids)
            self._ids.update(zip(ids, ids, strict=True))
            self.drops.update(drops)

    def track_many(self, client: trackline.Client, count: int, **properties: Any) -> list[str]:
        """`count` calls; returns the ids the client accepted into its buffer."""
        return [mid for _ in range(count) if (mid := self.track(client, properties)) is not None]

    def settle(
        self, client: trackline.Client | trackline.Stats, store: Store | Iterable[str]
    ) -> Account:
        """Compare the calls, the client's counters and the store; the client must be idle.

        `client` may be a `Stats` snapshot taken elsewhere (a child process); `store` may be
        a plain list of stored message ids.
        """
        stats = client if isinstance(client, trackline.Stats) else client.stats
        rows = store.stored_ids() if isinstance(store, Store) else list(store)
        with self._lock:
            sent = list(self.sent)
            drops = dict(self.drops)
            double_reports = self._double_reports
        sent_set = set(sent)
        counted = collections.Counter(rows)
        stored = {message_id for message_id in counted if message_id in sent_set}
        stray = sum(count for message_id, count in counted.items() if message_id not in sent_set)
        lost = tuple(m for m in sent if m not in stored and m not in drops)
        account = Account(
            name=self.name,
            sent=len(sent),
            accepted=len(self.accepted),
            stored=len(stored),
            stored_rows=len(rows),
            dropped=dict(stats.dropped),
            reported=dict(collections.Counter(drops.values())),
            lost=lost,
            stored_and_dropped_by_reason=dict(
                collections.Counter(drops[message_id] for message_id in stored & drops.keys())
            ),
            stray=stray,
            stats=stats,
            double_reports=double_reports,
        )
        self.accounts.append(account)
        return account
