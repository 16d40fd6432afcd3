"""Durable mode's buffer: each accepted message is committed to a SQLite spool before the call
returns, and deleted once it is delivered or dropped.

`Spool` keeps `MemoryBuffer`'s interface, counters, batches and flush tracking (it subclasses
it) and changes where messages live: in this process's spool file, plus the files it adopted
from processes that are gone, which are sent first (`spool_files.py`). Concurrent calls share
commits (`spool_commit.py`).

Each message gets an ordinal when it enters: the rows found at start first (0..found-1), then
every call's. In the process's own file a row's seq is its ordinal, so flush tracking works as in
memory mode. A part whose attempt ran out (retries or `delivery_timeout`) is not dropped: it goes
back to the spool and is tried again after `backoff_cap`, before newer rows. In durable mode only
`max_age` ends an outage's wait.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from trackline.buffer import Batch, MemoryBuffer, closed
from trackline.config import Config
from trackline.errors import DeliveryError
from trackline.report import Reporter
from trackline.spool_batch import HeldParts, SpoolBatch
from trackline.spool_commit import GroupCommit
from trackline.spool_file import Row, SpoolFile, is_corrupt
from trackline.spool_files import SpoolFiles, Written, close_all, discard, quarantine
from trackline.stats import DropReason

logger = logging.getLogger(__name__)

#: Give-up reasons that mean "not now" rather than "never": the part stays in the spool.
_KEEP = frozenset({DropReason.RETRIES_EXHAUSTED, DropReason.DELIVERY_TIMEOUT})

_T = TypeVar("_T")


class Spool(MemoryBuffer):
    """The durable buffer; `Client(spool=directory)` uses it instead of `MemoryBuffer`."""

    def __init__(self, config: Config, reporter: Reporter) -> None:
        assert config.spool is not None
        self._directory = config.spool
        self._max_spool_bytes = config.max_spool_bytes
        self._max_age = config.max_age
        self._synchronous = config.spool_synchronous
        self._pause = config.backoff_cap
        self._reporter = reporter
        super().__init__(config.max_queue_size, config.max_queue_bytes, config.flush_at)
        self._open()

    def _init_state(self) -> None:
        super()._init_state()
        self._files = SpoolFiles(self._directory, self._synchronous, self._reporter)
        self._commit = GroupCommit(self._lock, self._files.write, self._settle_written)
        self._taking = threading.Lock()
        self._found = 0
        self._found_taken = 0
        #: Committed rows not yet handed out, in every file.
        self._queued_rows = 0
        #: Message bytes held, from the call to the settling (what `max_spool_bytes` bounds).
        self._spooled_bytes = 0
        self._held = HeldParts(self._pause)
        self._reports: list[tuple[DeliveryError, list[bytes], int]] = []
        self._released = False

    def _open(self) -> None:
        """Adopt what processes that are gone left (counted as entered), then open a file."""
        files = self._files
        for target, lost in files.adopt():
            if lost:
                self.counters.enqueued += lost
                self.counters.add_dropped(DropReason.STORE_CORRUPT, lost)
                error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file moved to {target}")
                self._reports.append((error, [], lost))
        found = sum(file.untaken for file in files.adopted)
        self._found = self._queued_rows = found
        self._spooled_bytes = sum(file.untaken_bytes for file in files.adopted)
        self._entered = self._commit.durable = found
        self.counters.enqueued += found
        self.counters.queued += found
        files.own = files.open_own(found)
        if found:
            logger.info(
                "found %d message(s) in %d spool file(s) of earlier processes; sending them first",
                found,
                len(files.adopted),
            )
        self._drain_reports()

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None = None) -> DeliveryError | None:
        """Commit one message to the spool; the reason it was dropped instead.

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
                ordinal = self._entered
                self._entered += 1
                self._spooled_bytes += len(data)
                counters.queued += 1
                error = self._commit.add((ordinal, created, data))
        if self._reports:
            self._drain_reports()
        return error

    def admit(self, data: bytes) -> Batch | None:
        """Sync mode: commit the message, then hand it back in flight for the caller to send.

        The row only lives for the call, so `max_spool_bytes` is not applied; if it cannot be
        written the message is still sent, just not durably. None once sealed (`closed`).
        """
        created = time.time()
        with self._lock:
            if self._sealed or self._released:
                self.counters.enqueued += 1
                self.counters.add_dropped(DropReason.CLOSED, 1)
                return None
            row = (self._entered, created, data)
            self._entered += 1
            self.counters.enqueued += 1
            self.counters.in_flight += 1
            self._spooled_bytes += len(data)
            written = not self._released and self._commit.add(row, admitted=True) is None
            batch = SpoolBatch([row], row[0], self._files.own if written else None)
            self._in_flight[id(batch)] = batch
        self._drain_reports()
        return batch

    # -- the writer (see spool_commit.py; SpoolFiles.write does its I/O) ---------------------

    def _settle_written(
        self, rows: list[Row], admitted: set[int], written: Written
    ) -> DeliveryError | None:
        """Account a group commit (lock held); returns why its rows failed, if they did."""
        own, error, broken = written
        self._files.own = own
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
            counters = self.counters
            assert error is not None
            for ordinal, _, data in rows:
                if ordinal not in admitted:  # an admitted row is settled by its send
                    self._spooled_bytes -= len(data)
                    counters.queued -= 1
                    counters.add_dropped(error.reason, 1)
            self._progress.notify_all()
        for file in broken:
            self._lose(file)
        for file in [file for file in self._files.adopted if not file.remaining]:
            self._stop_using(file)
            self._unlocked(discard, file)
        return error

    def _unlocked(self, action: Callable[[SpoolFile], _T], file: SpoolFile) -> _T:
        """Run file I/O without the lock (held by the caller, and the writer's role with it)."""
        self._lock.release()
        try:
            return action(file)
        finally:
            self._lock.acquire()

    def _stop_using(self, file: SpoolFile) -> None:
        self._files.drop(file)
        self._commit.deletes.pop(file, None)

    def _lose(self, file: SpoolFile) -> None:
        """Quarantine a file found damaged (lock and writer's role held); count what it held."""
        if file.lost:
            return
        file.lost = True
        self._stop_using(file)
        target = self._unlocked(quarantine, file)
        count = self._count_lost(file)
        logger.warning(
            "spool file %s is damaged; moved it to %s; %d message(s) lost", file.path, target, count
        )
        if count:
            error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file moved to {target}")
            self._reports.append((error, [], count))

    def _count_lost(self, file: SpoolFile) -> int:
        """Count the rows of `file` not yet handed out as lost (`store_corrupt`; lock held)."""
        count = file.untaken
        self.counters.queued -= count
        self.counters.add_dropped(DropReason.STORE_CORRUPT, count)
        self._queued_rows -= count
        self._spooled_bytes -= file.untaken_bytes
        file.remaining -= count
        file.untaken = file.untaken_bytes = 0
        if file.adopted:
            self._found_taken += count
        self._progress.notify_all()
        return count

    def _drain_reports(self) -> None:
        """Report what was dropped while the lock was held, now that it is not."""
        with self._lock:
            reports, self._reports = self._reports, []
        for error, items, count in reports:
            self._reporter.dropped(error, items, count)

    # -- workers -----------------------------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, wait: float) -> Batch | None:
        """Wait up to `wait` seconds for a full batch (or a flush), then read one from disk.

        Parts given back after a failed attempt come first, once their pause is over; then
        the adopted files, oldest first; then this process's own rows.
        """
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
            batch = self._hand_out(file, rows)
        self._drain_reports()
        return batch

    def _read_failed(self, file: SpoolFile, exc: sqlite3.Error, wait: float) -> None:
        with self._lock:
            if file.lost or self._released:
                return
            if not is_corrupt(exc):
                self._reporter.warn("spool_read", "cannot read spool file %s: %s", file.path, exc)
                self._ready.wait(wait)
                return
            with self._commit.exclusive():
                self._lose(file)

    def _hand_out(self, file: SpoolFile, rows: list[Row]) -> SpoolBatch | None:
        """Account rows read from `file` as taken; drop the expired ones; batch the rest."""
        cutoff = time.time() - self._max_age
        with self._lock:
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
            self.counters.queued -= count
            if file.adopted:
                first_ordinal = self._found_taken
                self._found_taken += count
            else:
                first_ordinal = rows[0][0]
            return self._batch(file, self._expire(file, rows, cutoff), first_ordinal)

    def _batch(
        self, file: SpoolFile | None, rows: list[Row], first_ordinal: int
    ) -> SpoolBatch | None:
        """Put rows in flight as one batch (lock held)."""
        if not rows:
            return None
        batch = SpoolBatch(rows, first_ordinal, file)
        self._in_flight[id(batch)] = batch
        self.counters.in_flight += len(rows)
        return batch

    def _expire(self, file: SpoolFile | None, rows: list[Row], cutoff: float) -> list[Row]:
        """Drop (lock held) the rows older than `max_age`; returns the others."""
        expired = [row for row in rows if row[1] < cutoff]
        if not expired:
            return rows
        self.counters.add_dropped(DropReason.EXPIRED, len(expired))
        self._forget_rows(file, expired)
        self._progress.notify_all()
        error = DeliveryError(
            DropReason.EXPIRED, f"spooled longer than max_age ({self._max_age:g}s)"
        )
        self._reports.append((error, [row[2] for row in expired], len(expired)))
        return [row for row in rows if row[1] >= cutoff]

    def _forget_rows(self, file: SpoolFile | None, rows: list[Row]) -> None:
        """Rows are settled (lock held): release their bytes; delete them with the next write."""
        self._spooled_bytes -= sum(len(row[2]) for row in rows)
        if file is None or file.lost:
            return
        file.remaining -= len(rows)
        self._commit.delete(file, [row[0] for row in rows])

    def _take_held(self, wait: float) -> SpoolBatch | None:
        """Hand out the oldest given-back part once the pause is over (lock held)."""
        pause = self._held.wait_left()
        if pause > 0:
            self._ready.wait(min(pause, wait))
            return None
        part = self._held.pop()
        self.counters.queued -= len(part)
        rows = self._expire(part.file, part.rows(), time.time() - self._max_age)
        return self._batch(part.file, rows, part.first_seq)

    def resolve(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        """Settle part [start, end) as in memory mode, and delete its rows from the spool.

        A part whose attempt ran out (retries, `delivery_timeout`) is not dropped: it goes
        back to the spool, and this returns False so that nothing reports it as dropped.
        """
        assert isinstance(batch, SpoolBatch)
        if reason in _KEEP:
            self._give_back(batch, start, end)
            return False
        if not super().resolve(batch, start, end, reason, rejected):
            return False
        with self._lock:
            self._forget_rows(batch.file, batch.rows(start, end))
        return True

    def _give_back(self, batch: SpoolBatch, start: int, end: int) -> None:
        with self._lock:
            if batch._unresolved.get(start) != end or self._released:
                return
            del batch._unresolved[start]
            self.counters.in_flight -= end - start
            self.counters.queued += end - start
            part = SpoolBatch(batch.rows(start, end), batch.first_seq, batch.file)
            self._held.hold(part)
        self._reporter.warn(
            "spool_retry",
            "could not deliver %d message(s) now; they stay in the spool, next try in %gs",
            end - start,
            self._pause,
        )

    def finish(self, batch: Batch) -> None:
        """Write the deletes of what the batch settled, then wake flushes as in memory mode:
        once `flush()` returns, what it delivered is off the disk too."""
        with self._lock:
            if not self._released:
                self._commit.write_deletes()
        super().finish(batch)
        self._drain_reports()

    # -- flush tracking ----------------------------------------------------------------------

    def _batch_ready(self) -> bool:
        if self._held:
            return True
        queued = self._queued_rows
        if not queued:
            return False
        if queued >= self._flush_at or self._found_taken < self._found:
            return True
        own = self._files.own
        return own is not None and self._flush_target > own.cursor

    def _flushed(self, target: int) -> bool:
        if self._found_taken < min(target, self._found) or self._commit.durable < target:
            return False
        own = self._files.own
        if own is not None and own.untaken and own.cursor < target:
            return False
        if self._held.holds_before(target):
            return False
        return all(batch.first_seq >= target for batch in self._in_flight.values())

    # -- shutdown and fork -------------------------------------------------------------------

    def abandon(self, reason: str) -> list[bytes]:
        """End of shutdown: nothing is dropped; what is left stays on disk for the next start.

        Messages in flight count as queued again (they are still in the spool); a batch whose
        answer comes later is ignored. Files left empty are deleted, the others are unlocked
        for the next process to adopt. Returns [] since nothing was dropped.
        """
        with self._lock:
            self._commit.drain()
            counters = self.counters
            for batch in self._in_flight.values():
                count = sum(end - start for start, end in batch._unresolved.items())
                batch._unresolved.clear()
                counters.in_flight -= count
                counters.queued += count
            self._in_flight.clear()
            self._held.clear()
            self._released = True
            self._progress.notify_all()
            files = self._files.detach()
        close_all(files)
        self._drain_reports()
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
