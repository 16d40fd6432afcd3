"""Durable mode's buffer: each accepted message is committed to a SQLite spool before the call
returns, and deleted once it is delivered or dropped.

`Spool` is a `Buffer` like `MemoryBuffer`, with the same `Ledger` for its accounting, so the
workers, the delivery loop, the counters and flush tracking do not know where messages live:
here in this process's spool file, plus the files it adopted from processes that are gone,
which are sent first (`files.py`). Concurrent calls share commits (`commit.py`).

Each message gets an ordinal when it enters: the rows found at start first (0..found-1), then
every call's. In the process's own file a row's seq is its ordinal, so flush tracking works as in
memory mode. A part the delivery loop requeues (its retries or `delivery_timeout` ran out) waits
in `HeldParts` and is tried again after `backoff_cap`, before newer rows: in durable mode only
`max_age` ends an outage's wait.

Locking: one lock guards all of it. The public methods (the `Buffer` interface) take it; the
helpers below them run under it and never let it go. The only code that lets it go is the
group commit's I/O phase (`GroupCommit.commit`); file work a helper needs (deleting a drained
file, moving a damaged one aside) is queued for that phase.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time

from trackline.batch import Batch
from trackline.buffer import closed
from trackline.config import Config
from trackline.errors import DeliveryError
from trackline.ledger import Ledger
from trackline.report import Reporter
from trackline.spool.batches import HeldParts, SpoolBatch
from trackline.spool.commit import GroupCommit
from trackline.spool.file import Row, SpoolFile, is_corrupt
from trackline.spool.files import SpoolFiles, Written, close_all
from trackline.stats import DropReason

logger = logging.getLogger(__name__)


class Spool:
    """The durable `Buffer`; `Client(spool=directory)` uses it instead of `MemoryBuffer`."""

    can_requeue = True

    def __init__(self, config: Config, reporter: Reporter) -> None:
        assert config.spool is not None
        self._directory = config.spool
        self._max_spool_bytes = config.max_spool_bytes
        self._max_age = config.max_age
        self._synchronous = config.spool_synchronous
        self._pause = config.backoff_cap
        self._flush_at = config.flush_at
        self._reporter = reporter
        self._init_state()
        self._open()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._ledger = Ledger(self._lock)
        self.counters = self._ledger.counters
        self._files = SpoolFiles(self._directory, self._synchronous, self._reporter)
        self._commit = GroupCommit(self._lock, self._files.write, self._settle_written)
        #: One worker reads from disk at a time.
        self._taking = threading.Lock()
        self._found = 0
        self._found_taken = 0
        #: Committed rows not yet handed out, in every file.
        self._queued_rows = 0
        #: Message bytes held, from the call to the settling (what `max_spool_bytes` bounds).
        self._spooled_bytes = 0
        self._held = HeldParts(self._pause)
        #: Drops and warnings found with the lock held, told once it is not: a log handler
        #: may do I/O, which must not happen under the lock (under gevent it may switch).
        self._reports: list[tuple[DeliveryError, list[bytes], int]] = []
        self._warnings: list[tuple[str, str, tuple[object, ...]]] = []
        self._sealed = False
        self._closed = False
        #: Shut down: the files are handed over to the next process.
        self._released = False

    def _open(self) -> None:
        """Adopt what processes that are gone left (counted as entered), then open a file."""
        files = self._files
        counters = self.counters
        for target, lost in files.adopt():
            if lost:
                counters.enqueued += lost
                counters.add_dropped(DropReason.STORE_CORRUPT, lost)
                error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file moved to {target}")
                self._reports.append((error, [], lost))
        found = sum(file.untaken for file in files.adopted)
        self._found = self._queued_rows = found
        self._spooled_bytes = sum(file.untaken_bytes for file in files.adopted)
        self._ledger.entered = self._commit.durable = found
        counters.enqueued += found
        counters.queued += found
        files.own = files.open_own(found)
        if found:
            logger.info(
                "found %d message(s) in %d spool file(s) of earlier processes; sending them first",
                found,
                len(files.adopted),
            )
        self._report()

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None = None) -> DeliveryError | None:
        """Commit one message to the spool before returning.

        `block_timeout` is ignored: a full spool drops at once (`spool_full`).
        """
        created = time.time()
        error: DeliveryError | None
        with self._lock:
            counters = self.counters
            counters.enqueued += 1
            if self._sealed or self._released:
                counters.add_dropped(DropReason.CLOSED, 1)
                error = closed()
            elif self._spooled_bytes + len(data) > self._max_spool_bytes:
                counters.add_dropped(DropReason.SPOOL_FULL, 1)
                error = DeliveryError(
                    DropReason.SPOOL_FULL,
                    f"the spool holds {self._spooled_bytes} bytes of messages; "
                    f"max_spool_bytes is {self._max_spool_bytes}",
                )
            else:
                ordinal = self._ledger.entered
                self._ledger.entered += 1
                self._spooled_bytes += len(data)
                counters.queued += 1
                error = self._commit.add((ordinal, created, data))
        if self._reports or self._warnings:
            self._report()
        return error

    def admit(self, data: bytes) -> Batch | None:
        """Sync mode: commit the message, then hand it back in flight for the caller to send.

        The row only lives for the call, so `max_spool_bytes` is not applied; if it cannot be
        written the message is still sent, just not durably.
        """
        created = time.time()
        with self._lock:
            if self._sealed or self._released:
                self.counters.enqueued += 1
                self.counters.add_dropped(DropReason.CLOSED, 1)
                return None
            ledger = self._ledger
            row = (ledger.entered, created, data)
            ledger.entered += 1
            self._spooled_bytes += len(data)
            written = self._commit.add(row, admitted=True) is None
            batch = SpoolBatch([row], row[0], self._files.own if written else None)
            ledger.admitted(batch)
        self._report()
        return batch

    # -- workers -----------------------------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, wait: float) -> Batch | None:
        """Requeued parts come first, once their pause is over; then the adopted files,
        oldest first; then this process's own rows. The rows are read without the lock."""
        with self._taking:
            with self._lock:
                if not self._closed and not self._batch_ready():
                    self._ready.wait(wait)
                if self._closed or self._released:
                    return None
                self._commit.commit_if_idle()
                if self._held:
                    return self._take_held(wait)
                file = self._files.next_to_read()
                if file is None:
                    return None
                start = file.cursor
                end = self._commit.durable if file is self._files.own else sys.maxsize
            try:
                rows = file.read(start, end, max_items, max_bytes)
            except sqlite3.Error as exc:
                self._read_failed(file, exc, wait)
                return None
            with self._lock:
                batch = self._hand_out(file, rows)
        self._report()
        return batch

    def _read_failed(self, file: SpoolFile, exc: sqlite3.Error, wait: float) -> None:
        with self._lock:
            if file.lost or self._released:
                return
            if not is_corrupt(exc):
                self._ready.wait(wait)
                warning = ("spool_read", "cannot read spool file %s: %s", (file.path, exc))
                self._warnings.append(warning)
            else:
                # Once no write is under way, nobody reads or writes the file again; the
                # commit written here moves it aside and counts what it held.
                self._commit.wait_idle()
                self._files.drop(file)
                self._commit.retire(file, damaged=True)
                self._commit.write_pending()
        self._report()

    def settle(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        """As in memory mode, and the part's rows are deleted with the next commit."""
        assert isinstance(batch, SpoolBatch)
        with self._lock:
            if not self._ledger.settle(batch, start, end, reason, rejected):
                return False
            self._forget_rows(batch.file, batch.rows(start, end))
            return True

    def requeue(self, batch: Batch, start: int, end: int) -> bool:
        """The part's rows stay on disk; its messages wait in memory for the next attempt."""
        assert isinstance(batch, SpoolBatch)
        with self._lock:
            if self._released or not self._ledger.requeued(batch, start, end):
                return False
            self._held.hold(SpoolBatch(batch.rows(start, end), batch.first_seq, batch.file))
            return True

    def split(self, batch: Batch, start: int, end: int) -> tuple[tuple[int, int], ...]:
        with self._lock:
            return batch.split(start, end)

    def finish(self, batch: Batch) -> None:
        """Write the deletes of what the batch settled, then wake flushes as in memory mode:
        once `flush()` returns, what it delivered is off the disk too."""
        with self._lock:
            if not self._released:
                self._commit.write_pending()
            self._ledger.finish(batch)
        self._report()

    # -- flush, shutdown, fork ---------------------------------------------------------------

    def request_flush(self) -> int:
        with self._lock:
            self._ready.notify_all()
            return self._ledger.request_flush()

    def wait_flushed(self, target: int, deadline: float | None) -> bool:
        with self._lock:
            return self._ledger.wait(lambda: self._flushed(target), deadline)

    def seal(self) -> None:
        with self._lock:
            self._sealed = True

    def close(self) -> None:
        with self._lock:
            self._sealed = self._closed = True
            self._ready.notify_all()
            self._ledger.progress.notify_all()

    def abandon(self, reason: str) -> list[bytes]:
        """End of shutdown: nothing is dropped; what is left stays on disk for the next start.

        Messages in flight count as queued again (they are still in the spool); a batch whose
        answer comes later is ignored. Files left empty are deleted, the others are unlocked
        for the next process to adopt. Returns [] since nothing was dropped.
        """
        with self._lock:
            self._commit.drain()
            counters = self.counters
            for _, parts in self._ledger.release_in_flight():
                count = sum(end - start for start, end in parts)
                counters.in_flight -= count
                counters.queued += count
            self._held.clear()
            self._released = True
            self._ledger.progress.notify_all()
            files = self._files.detach()
        close_all(files)
        self._report()
        return []

    def reset_after_fork(self) -> None:
        """In the child: leave the parent's files to it, adopt orphans, open a file of its own."""
        self._files.forget_all()
        self._init_state()
        try:
            self._open()
        except Exception:  # pragma: no cover - a fork hook must never raise
            logger.warning("opening the spool after fork failed", exc_info=True)

    def __len__(self) -> int:
        return self._queued_rows + len(self._held)

    def _report(self) -> None:
        """Tell the drops and warnings found while the lock was held, now that it is not."""
        with self._lock:
            reports, self._reports = self._reports, []
            warnings, self._warnings = self._warnings, []
        for key, message, args in warnings:
            self._reporter.warn(key, message, *args)
        for error, items, count in reports:
            self._reporter.dropped(error, items, count)

    # -- under the lock: the accounting of rows and files; none of these lets the lock go ----

    def _settle_written(
        self, rows: list[Row], admitted: set[int], written: Written
    ) -> DeliveryError | None:
        """Account a group commit; returns why its rows failed, if they did."""
        own, error, moved = written
        for file, target in moved:
            self._moved(file, target)
        if own is not None and own.lost:
            own = None
        self._files.own = own
        if rows and error is None and own is None:
            error = DeliveryError(DropReason.STORE_CORRUPT, "the spool file was found damaged")
        if rows and error is None:
            assert own is not None
            own.remaining += len(rows)
            fresh = [row for row in rows if row[0] not in admitted] if admitted else rows
            if fresh:
                own.untaken += len(fresh)
                own.untaken_bytes += sum(len(row[2]) for row in fresh)
                before = self._queued_rows
                self._queued_rows += len(fresh)
                if before < self._flush_at <= self._queued_rows:
                    self._ready.notify()
        elif rows:
            assert error is not None
            counters = self.counters
            for ordinal, _, data in rows:
                if ordinal not in admitted:  # an admitted row is settled by its send
                    self._spooled_bytes -= len(data)
                    counters.queued -= 1
                    counters.add_dropped(error.reason, 1)
            self._ledger.progress.notify_all()
        return error

    def _moved(self, file: SpoolFile, target: str) -> None:
        """A damaged file was moved aside: stop using it, count what it held as lost
        (`store_corrupt`), and say so."""
        if file.lost:
            return
        file.lost = True
        self._files.drop(file)
        count = self._count_lost(file)
        detail = "spool file %s is damaged; moved it to %s; %d message(s) lost"
        self._warnings.append((f"spool_damaged {file.path}", detail, (file.path, target, count)))
        if count:
            error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file moved to {target}")
            self._reports.append((error, [], count))

    def _count_lost(self, file: SpoolFile) -> int:
        """Count the rows of `file` not yet handed out as lost (`store_corrupt`)."""
        count = file.untaken
        self.counters.queued -= count
        self.counters.add_dropped(DropReason.STORE_CORRUPT, count)
        self._queued_rows -= count
        self._spooled_bytes -= file.untaken_bytes
        file.remaining -= count
        file.untaken = file.untaken_bytes = 0
        if file.adopted:
            self._found_taken += count
        self._ledger.progress.notify_all()
        return count

    def _hand_out(self, file: SpoolFile, rows: list[Row]) -> SpoolBatch | None:
        """Account rows read from `file` as taken; drop the expired ones; batch the rest."""
        if self._closed or self._released or file.lost:
            return None
        if not rows:
            # The counts promised rows the file does not have: count them lost, never spin.
            self._count_lost(file)
            return None
        count = len(rows)
        file.cursor = rows[-1][0] + 1
        file.untaken -= count
        file.untaken_bytes -= sum(len(row[2]) for row in rows)
        self._queued_rows -= count
        if file.adopted:
            first_ordinal = self._found_taken
            self._found_taken += count
        else:
            first_ordinal = rows[0][0]
        return self._in_flight(file, rows, first_ordinal)

    def _take_held(self, wait: float) -> SpoolBatch | None:
        """Hand out the oldest requeued part once the pause is over."""
        pause = self._held.wait_left()
        if pause > 0:
            self._ready.wait(min(pause, wait))
            return None
        part = self._held.pop()
        return self._in_flight(part.file, part.rows(), part.first_seq)

    def _in_flight(
        self, file: SpoolFile | None, rows: list[Row], first_ordinal: int
    ) -> SpoolBatch | None:
        """Put queued rows in flight as one batch, dropping those older than `max_age`."""
        cutoff = time.time() - self._max_age
        fresh = [row for row in rows if row[1] >= cutoff]
        if len(fresh) < len(rows):
            expired = [row for row in rows if row[1] < cutoff]
            counters = self.counters
            counters.queued -= len(expired)
            counters.add_dropped(DropReason.EXPIRED, len(expired))
            self._forget_rows(file, expired)
            self._ledger.progress.notify_all()
            error = DeliveryError(
                DropReason.EXPIRED, f"spooled longer than max_age ({self._max_age:g}s)"
            )
            self._reports.append((error, [row[2] for row in expired], len(expired)))
        if not fresh:
            return None
        batch = SpoolBatch(fresh, first_ordinal, file)
        self._ledger.taken(batch)
        return batch

    def _forget_rows(self, file: SpoolFile | None, rows: list[Row]) -> None:
        """Rows are settled: release their bytes; delete them with the next write, or the
        whole file once an adopted one holds nothing more."""
        self._spooled_bytes -= sum(len(row[2]) for row in rows)
        if file is None or file.lost:
            return
        file.remaining -= len(rows)
        if file.adopted and not file.remaining and not file.untaken:
            self._files.drop(file)
            self._commit.retire(file, damaged=False)
        else:
            self._commit.delete(file, [row[0] for row in rows])

    def _batch_ready(self) -> bool:
        if self._held:
            return True
        queued = self._queued_rows
        if not queued:
            return False
        if queued >= self._flush_at or self._found_taken < self._found:
            return True
        own = self._files.own
        return own is not None and self._ledger.flush_target > own.cursor

    def _flushed(self, target: int) -> bool:
        if self._found_taken < min(target, self._found) or self._commit.durable < target:
            return False
        own = self._files.own
        if own is not None and own.untaken and own.cursor < target:
            return False
        if self._held.holds_before(target):
            return False
        return not self._ledger.holds_before(target)
