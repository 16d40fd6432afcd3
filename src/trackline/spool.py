"""Durable mode's buffer: every accepted message is committed to a SQLite spool before the call
returns, and deleted once it is delivered or dropped.

`Spool` keeps `MemoryBuffer`'s interface, counters, batches and flush tracking (it subclasses
it) and changes where messages live: in this process's spool file, plus the files it adopted
from processes that are gone (`spool_dir.py`), which are sent first, oldest first.

Group commit. A commit per call would serialise concurrent callers behind one fsync-free but
still slow write each. Instead a caller appends its row to a pending list and, if nobody is
writing, becomes the writer: it writes every pending row (and the deletes of delivered rows) in
one transaction, then wakes the others. Whoever arrives during a write waits for the next one.
Every caller returns only once its own row is committed, or knows why it was not.

Numbers. Each message gets an ordinal when it enters: the rows found at start come first
(0..found-1), then every call's. In this process's own file the seq of a row is its ordinal, so
flush tracking works as in memory mode. What one attempt could not deliver (retries or
`delivery_timeout` ran out) goes back to the spool and is tried again after `backoff_cap`, in
front of newer rows: in durable mode only `max_age` ends an outage's wait.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator

from trackline import spool_dir
from trackline.buffer import Batch, MemoryBuffer
from trackline.config import Config
from trackline.errors import DeliveryError
from trackline.report import Reporter
from trackline.spool_file import Row, SpoolFile, is_corrupt, is_disk_full
from trackline.stats import DropReason

logger = logging.getLogger(__name__)

#: Give-up reasons that mean "not now" rather than "never": the part stays in the spool.
_KEEP = frozenset({DropReason.RETRIES_EXHAUSTED, DropReason.DELIVERY_TIMEOUT})
#: Seconds between attempts to create this process's spool file after a failure.
REOPEN_INTERVAL = 1.0


class SpoolBatch(Batch):
    """A batch that knows the file and the seqs its messages came from."""

    __slots__ = ("created", "file", "seqs")

    def __init__(
        self, rows: list[Row], first_seq: int, file: SpoolFile | None, size: int = 0
    ) -> None:
        items = [row[2] for row in rows]
        super().__init__(items, first_seq, size or sum(len(item) + 1 for item in items))
        self.file = file
        self.seqs = [row[0] for row in rows]
        self.created = [row[1] for row in rows]

    def rows(self, start: int, end: int) -> list[Row]:
        """Part [start, end) as rows again."""
        return list(
            zip(self.seqs[start:end], self.created[start:end], self.items[start:end], strict=True)
        )


@contextlib.contextmanager
def _unlocked(lock: threading.Lock) -> Iterator[None]:
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


class Spool(MemoryBuffer):
    """The durable buffer; `Client(spool=directory)` uses it instead of `MemoryBuffer`."""

    def __init__(self, config: Config, reporter: Reporter) -> None:
        assert config.spool is not None
        self._directory = config.spool
        self._max_spool_bytes = config.max_spool_bytes
        self._max_age = config.max_age
        self._synchronous = config.spool_synchronous
        self._hold = config.backoff_cap
        self._reporter = reporter
        super().__init__(config.max_queue_size, config.max_queue_bytes, config.flush_at)
        self._open()

    def _init_state(self) -> None:
        super()._init_state()
        self._written = threading.Condition(self._lock)
        self._taking = threading.Lock()
        self._own: SpoolFile | None = None
        self._reopen_at = 0.0
        self._adopted: list[SpoolFile] = []
        self._adopted_total = 0
        self._adopted_taken = 0
        self._pending: list[Row] = []
        self._pending_admitted: set[int] = set()
        self._deletes: dict[SpoolFile, list[int]] = {}
        self._writing = False
        #: Every ordinal below it is committed, or failed with its error in `_failed`.
        self._durable = 0
        self._failed: dict[int, DeliveryError] = {}
        #: Committed rows not yet taken, in every file.
        self._queued_rows = 0
        #: Message bytes held: pending, committed, in flight (what `max_spool_bytes` bounds).
        self._spooled_bytes = 0
        #: Parts given back after an attempt ran out, oldest first, held until `_retry_at`.
        self._retry: list[SpoolBatch] = []
        self._retry_at = 0.0
        self._reports: list[tuple[DeliveryError, list[bytes], int]] = []
        self._released = False

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> None:
        """Adopt the files of processes that are gone, then create this process's own file."""
        try:
            orphans = spool_dir.adopt_orphans(self._directory)
        except OSError as exc:
            logger.warning("cannot read the spool directory %s: %s", self._directory, exc)
            orphans = []
        for path, lock in orphans:
            self._adopt(path, lock)
        found = self._adopted_total
        self._entered = self._durable = found
        self._queued_rows = found
        self.counters.enqueued += found
        self.counters.queued += found
        self._own = self._open_own()
        if found:
            logger.info(
                "found %d message(s) in %d spool file(s) left by earlier processes; "
                "sending them first",
                found,
                len(self._adopted),
            )
        self._drain_reports()

    def _adopt(self, path: str, lock: spool_dir.FileLock) -> None:
        try:
            file = SpoolFile(path, lock, self._synchronous, adopted=True)
        except Exception as exc:
            self._quarantine(path, lock, exc)
            return
        try:
            count, size, first = file.scan()
        except Exception as exc:
            file.close()
            self._quarantine(path, lock, exc)
            return
        if not count:
            _discard(file)
            return
        file.remaining = file.untaken = count
        file.untaken_bytes = size
        file.cursor = first
        self._adopted.append(file)
        self._adopted_total += count
        self._spooled_bytes += size

    def _quarantine(self, path: str, lock: spool_dir.FileLock, exc: BaseException) -> None:
        """Move an unreadable file aside and count what it held, when that can be told."""
        lost = SpoolFile.count_rows(path)
        try:
            target = spool_dir.quarantine(path)
        except OSError as move_error:
            logger.warning("cannot quarantine spool file %s: %s", path, move_error)
            target = path
        lock.release(unlink=True)
        logger.warning(
            "spool file %s cannot be read (%s); moved it to %s, %s message(s) lost",
            path,
            exc,
            target,
            "an unknown number of" if lost is None else lost,
        )
        if lost:
            self.counters.enqueued += lost
            self.counters.add_dropped(DropReason.STORE_CORRUPT, lost)
            error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file quarantined to {target}")
            self._reports.append((error, [], lost))

    def _open_own(self) -> SpoolFile | None:
        """Create this process's spool file; None (tried again a second later) if it fails."""
        now = time.monotonic()
        if now < self._reopen_at:
            return None
        try:
            path, lock = spool_dir.create_own(self._directory)
        except OSError as exc:
            self._reopen_at = now + REOPEN_INTERVAL
            self._reporter.warn("spool_open", "cannot create a spool file: %s", exc)
            return None
        try:
            file = SpoolFile(path, lock, self._synchronous, adopted=False)
        except Exception as exc:
            self._reopen_at = now + REOPEN_INTERVAL
            spool_dir.remove(path)
            lock.release(unlink=True)
            self._reporter.warn("spool_open", "cannot create spool file %s: %s", path, exc)
            return None
        file.cursor = self._durable
        return file

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None = None) -> bool:
        """Commit one message to the spool; False when it was dropped (and reported).

        `block_timeout` is ignored: a full spool drops at once (`spool_full`).
        """
        created = time.time()
        error: DeliveryError | None
        with self._lock:
            counters = self.counters
            counters.enqueued += 1
            if self._released:
                counters.add_dropped(DropReason.CLOSED, 1)
                error = DeliveryError(DropReason.CLOSED, "the client was shut down")
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
                self._pending.append((ordinal, created, data))
                error = self._wait_durable(ordinal)
        if error is None:
            return True
        self._reporter.dropped(error, [data], 1)
        self._drain_reports()
        return False

    def admit(self, data: bytes) -> Batch:
        """Sync mode: commit the message, then hand it back in flight for the caller to send.

        The row only lives for the call, so `max_spool_bytes` is not applied; if it cannot be
        written the message is still sent, just not durably.
        """
        created = time.time()
        with self._lock:
            ordinal = self._entered
            self._entered += 1
            self.counters.enqueued += 1
            self.counters.in_flight += 1
            self._spooled_bytes += len(data)
            self._pending.append((ordinal, created, data))
            self._pending_admitted.add(ordinal)
            failed = self._wait_durable(ordinal) is not None
            batch = SpoolBatch([(ordinal, created, data)], ordinal, None if failed else self._own)
            self._in_flight[id(batch)] = batch
        self._drain_reports()
        return batch

    def _wait_durable(self, ordinal: int) -> DeliveryError | None:
        """Return (lock held) once row `ordinal` is committed, writing it if nobody is."""
        while self._durable <= ordinal:
            if self._writing:
                self._written.wait()
            else:
                self._commit_pending()
        return self._failed.pop(ordinal, None)

    # -- the writer --------------------------------------------------------------------------

    def _commit_pending(self) -> None:
        """Write every pending row and delete as the one writer (lock held, not writing)."""
        self._writing = True
        try:
            rows, self._pending = self._pending, []
            admitted, self._pending_admitted = self._pending_admitted, set()
            deletes, self._deletes = self._deletes, {}
            own = self._own
            with _unlocked(self._lock):
                own, error, broken = self._write(own, rows, deletes)
            self._own = own
            self._settle_written(own, rows, admitted, error)
            for file in broken:
                self._lose(file)
            drained = [f for f in deletes if f.adopted and not f.lost and not f.remaining]
            if drained:
                for file in drained:
                    self._adopted.remove(file)
                with _unlocked(self._lock):
                    for file in drained:
                        _discard(file)
        finally:
            self._writing = False
            self._written.notify_all()

    def _write(
        self, own: SpoolFile | None, rows: list[Row], deletes: dict[SpoolFile, list[int]]
    ) -> tuple[SpoolFile | None, DeliveryError | None, list[SpoolFile]]:
        """The writer's I/O, without the lock: (own file, why the rows failed, broken files)."""
        broken = []
        for file, seqs in deletes.items():
            if file is own or file.lost:
                continue
            try:
                file.write((), seqs)
            except sqlite3.Error as exc:
                if is_corrupt(exc):
                    broken.append(file)
                self._reporter.warn(
                    "spool_delete", "cannot delete sent rows from %s: %s", file.path, exc
                )
        if own is None and rows:
            own = self._open_own()
        if own is None:
            detail = "the spool directory cannot be written; see the warnings logged"
            return None, DeliveryError(DropReason.SPOOL_FULL, detail) if rows else None, broken
        try:
            own.write(rows, deletes.get(own, ()))
        except sqlite3.Error as exc:
            if is_corrupt(exc):
                broken.append(own)
                return own, DeliveryError(DropReason.STORE_CORRUPT, f"spool file: {exc}"), broken
            what = "the disk is full" if is_disk_full(exc) else "the spool cannot be written"
            return own, DeliveryError(DropReason.SPOOL_FULL, f"{what}: {exc}"), broken
        return own, None, broken

    def _settle_written(
        self,
        own: SpoolFile | None,
        rows: list[Row],
        admitted: set[int],
        error: DeliveryError | None,
    ) -> None:
        if not rows:
            return
        if error is None:
            assert own is not None
            fresh = [row for row in rows if row[0] not in admitted]
            own.remaining += len(rows)
            own.untaken += len(fresh)
            own.untaken_bytes += sum(len(row[2]) for row in fresh)
            before = self._queued_rows
            self._queued_rows += len(fresh)
            if before < self._flush_at <= self._queued_rows:
                self._ready.notify()
        else:
            counters = self.counters
            for ordinal, _, data in rows:
                self._spooled_bytes -= len(data)
                self._failed[ordinal] = error
                if ordinal not in admitted:
                    counters.queued -= 1
                    counters.add_dropped(error.reason, 1)
            self._progress.notify_all()
        self._durable = rows[-1][0] + 1
        self._written.notify_all()

    def _lose(self, file: SpoolFile) -> None:
        """Quarantine a file found damaged while running (lock and writer role held)."""
        if file.lost:
            return
        file.lost = True
        count = file.untaken
        counters = self.counters
        counters.queued -= count
        counters.add_dropped(DropReason.STORE_CORRUPT, count)
        self._queued_rows -= count
        self._spooled_bytes -= file.untaken_bytes
        file.untaken = file.untaken_bytes = 0
        if file.adopted:
            self._adopted.remove(file)
            self._adopted_taken += count
        elif file is self._own:
            self._own = None
        self._deletes.pop(file, None)
        self._progress.notify_all()
        with _unlocked(self._lock):
            file.close()
            try:
                target = spool_dir.quarantine(file.path)
            except OSError:
                target = file.path
            file.lock.release(unlink=True)
        logger.warning(
            "spool file %s is damaged; moved it to %s, %d message(s) lost", file.path, target, count
        )
        if count:
            error = DeliveryError(DropReason.STORE_CORRUPT, f"spool file quarantined to {target}")
            self._reports.append((error, [], count))

    def _drain_reports(self) -> None:
        """Report what was dropped inside the lock, now that it is released."""
        if not self._reports:
            return
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
                if self._deletes and not self._writing:
                    self._commit_pending()
                if self._retry:
                    return self._take_retry(wait)
                file = self._next_file()
                if file is None:
                    return None
                start = file.cursor
                end = self._durable if file is self._own else sys.maxsize
            try:
                rows = file.read(start, end, max_items, max_bytes)
            except sqlite3.Error as exc:
                self._read_failed(file, exc, wait)
                return None
            batch = self._hand_out(file, rows)
        self._drain_reports()
        return batch

    def _next_file(self) -> SpoolFile | None:
        for file in self._adopted:
            if file.untaken:
                return file
        own = self._own
        return own if own is not None and own.untaken else None

    def _read_failed(self, file: SpoolFile, exc: sqlite3.Error, wait: float) -> None:
        with self._lock:
            if file.lost or self._released:
                return
            if not is_corrupt(exc):
                self._reporter.warn("spool_read", "cannot read spool file %s: %s", file.path, exc)
                self._ready.wait(wait)
                return
            while self._writing:
                self._written.wait()
            self._writing = True
            try:
                self._lose(file)
            finally:
                self._writing = False
                self._written.notify_all()

    def _hand_out(self, file: SpoolFile, rows: list[Row]) -> SpoolBatch | None:
        """Account rows read from `file` as taken; drop the expired ones; batch the rest."""
        cutoff = time.time() - self._max_age
        with self._lock:
            if self._closed or self._released or file.lost:
                return None
            count = len(rows)
            counters = self.counters
            if not count:
                # The counts promised rows the file does not have: count them lost, never spin.
                rows_missing = file.untaken
                counters.queued -= rows_missing
                counters.add_dropped(DropReason.STORE_CORRUPT, rows_missing)
                self._queued_rows -= rows_missing
                self._spooled_bytes -= file.untaken_bytes
                if file.adopted:
                    self._adopted_taken += rows_missing
                file.remaining -= rows_missing
                file.untaken = file.untaken_bytes = 0
                self._progress.notify_all()
                return None
            file.cursor = rows[-1][0] + 1
            file.untaken -= count
            file.untaken_bytes -= sum(len(row[2]) for row in rows)
            self._queued_rows -= count
            counters.queued -= count
            if file.adopted:
                first_ordinal = self._adopted_taken
                self._adopted_taken += count
            else:
                first_ordinal = rows[0][0]
            fresh = self._expire(file, rows, cutoff)
            if not fresh:
                return None
            batch = SpoolBatch(fresh, first_ordinal, file)
            self._in_flight[id(batch)] = batch
            counters.in_flight += len(fresh)
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
        """Rows are settled (lock held): release their bytes and delete them with the next write."""
        self._spooled_bytes -= sum(len(row[2]) for row in rows)
        if file is None or file.lost:
            return
        file.remaining -= len(rows)
        self._deletes.setdefault(file, []).extend(row[0] for row in rows)

    def _take_retry(self, wait: float) -> SpoolBatch | None:
        """Hand out the oldest given-back part once the pause is over (lock held)."""
        pause = self._retry_at - time.monotonic()
        if pause > 0:
            self._ready.wait(min(pause, wait))
            return None
        part = self._retry.pop(0)
        fresh = self._expire(part.file, part.rows(0, len(part)), time.time() - self._max_age)
        self.counters.queued -= len(part)
        if not fresh:
            return None
        batch = SpoolBatch(fresh, part.first_seq, part.file)
        self._in_flight[id(batch)] = batch
        self.counters.in_flight += len(fresh)
        return batch

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
            count = end - start
            self.counters.in_flight -= count
            self.counters.queued += count
            part = SpoolBatch(batch.rows(start, end), batch.first_seq, batch.file)
            bisect.insort(self._retry, part, key=lambda queued: queued.first_seq)
            self._retry_at = time.monotonic() + self._hold
        self._reporter.warn(
            "spool_retry",
            "could not deliver %d message(s) this time; they stay in the spool and are "
            "tried again in %gs",
            count,
            self._hold,
        )

    def finish(self, batch: Batch) -> None:
        """As in memory mode; then delete what the batch settled, if nobody is writing."""
        super().finish(batch)
        with self._lock:
            if self._deletes and not self._writing and not self._released:
                self._commit_pending()
        self._drain_reports()

    # -- flush tracking ----------------------------------------------------------------------

    def _batch_ready(self) -> bool:
        if self._retry:
            return True
        queued = self._queued_rows
        if not queued:
            return False
        if queued >= self._flush_at or self._adopted_taken < self._adopted_total:
            return True
        own = self._own
        return own is not None and self._flush_target > own.cursor

    def _flushed(self, target: int) -> bool:
        if self._adopted_taken < min(target, self._adopted_total) or self._durable < target:
            return False
        own = self._own
        if own is not None and own.untaken and own.cursor < target:
            return False
        if any(part.first_seq < target for part in self._retry):
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
            while self._writing:
                self._written.wait()
            if self._pending or self._deletes:
                self._commit_pending()
            counters = self.counters
            for batch in self._in_flight.values():
                count = sum(end - start for start, end in batch._unresolved.items())
                batch._unresolved.clear()
                counters.in_flight -= count
                counters.queued += count
            self._in_flight.clear()
            self._retry.clear()
            self._released = True
            files = [file for file in (*self._adopted, self._own) if file is not None]
            self._progress.notify_all()
        for file in files:
            if file.remaining:
                file.close()
                file.lock.release(unlink=False)
            else:
                _discard(file)
        self._drain_reports()
        return []

    def reset_after_fork(self) -> None:
        """In the child: leave the parent's files to it, open a file of its own, adopt orphans."""
        for file in (*self._adopted, self._own):
            if file is not None:
                file.forget()
        self._init_state()
        try:
            self._open()
        except Exception:  # pragma: no cover - a fork hook must never raise
            logger.warning("opening the spool after fork failed", exc_info=True)

    def __len__(self) -> int:
        return self._queued_rows + sum(len(part) for part in self._retry)


def _discard(file: SpoolFile) -> None:
    """Close a file that holds nothing more and delete it, then its lock."""
    file.close()
    spool_dir.remove(file.path)
    file.lock.release(unlink=True)
