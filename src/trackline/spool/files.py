"""The spool files one process holds: its own, and those it adopted, in the order they are read;
and the I/O of a group commit over them.

At start (and in a forked child) the process adopts the files of processes that are gone,
oldest first, and creates its own. Adopted files are read before its own and deleted once all
their rows are settled. A file that cannot be read is quarantined and the loss counted; a file
this process cannot create is retried at most once a second, meanwhile calls are dropped
(`store_unavailable`) rather than raising. At shutdown the files still holding rows are
unlocked for the next process, the empty ones deleted.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Final, NamedTuple

from trackline.errors import DeliveryError
from trackline.report import Reporter
from trackline.spool import ownership
from trackline.spool.file import Row, SpoolFile, is_corrupt, is_disk_full
from trackline.stats import DropReason

logger = logging.getLogger(__name__)

#: Seconds between attempts to create this process's spool file after a failure.
REOPEN_INTERVAL: Final = 1.0


class Written(NamedTuple):
    """What one group commit did: the own file it wrote to (opened if there was none), why
    its rows failed if they did, and the files it moved aside, damaged (found so on the way,
    or retired as such), with where each went."""

    own: SpoolFile | None
    error: DeliveryError | None
    moved: list[tuple[SpoolFile, str]]


class SpoolFiles:
    """This process's spool files; the spool keeps their counters under its lock."""

    def __init__(self, directory: str, synchronous: str, reporter: Reporter) -> None:
        self.directory = directory
        self._synchronous = synchronous
        self._reporter = reporter
        self.own: SpoolFile | None = None
        self.adopted: list[SpoolFile] = []
        self._reopen_at = 0.0

    def adopt(self) -> list[tuple[str, int | None]]:
        """Adopt the files of processes that are gone, oldest first, and count their rows.

        Returns the files quarantined because they could not be read: (where they went, how
        many messages they held, or None when that could not be told either).
        """
        try:
            orphans = ownership.adopt_orphans(self.directory)
        except OSError as exc:
            logger.warning("cannot read the spool directory %s: %s", self.directory, exc)
            return []
        quarantined = []
        for path, lock in orphans:
            try:
                file = SpoolFile(path, lock, self._synchronous, adopted=True)
            except Exception as exc:
                quarantined.append(self._quarantine_unopened(path, lock, exc))
                continue
            try:
                count, size, first = file.scan()
            except Exception as exc:
                file.close()
                quarantined.append(self._quarantine_unopened(path, lock, exc))
                continue
            if not count:
                discard(file)
                continue
            file.remaining = file.untaken = count
            file.untaken_bytes = size
            file.cursor = first
            self.adopted.append(file)
        return quarantined

    def _quarantine_unopened(
        self, path: str, lock: ownership.FileLock, exc: BaseException
    ) -> tuple[str, int | None]:
        lost = SpoolFile.count_rows(path)
        target = _move_aside(path)
        lock.release(unlink=True)
        logger.warning(
            "spool file %s cannot be read (%s); moved it to %s; %s message(s) lost",
            path,
            exc,
            target,
            "an unknown number of" if lost is None else lost,
        )
        return target, lost

    def open_own(self, first_seq: int) -> SpoolFile | None:
        """Create this process's file, whose seqs start at `first_seq`; None if it fails.

        After a failure, calls within `REOPEN_INTERVAL` return None without trying.
        """
        now = time.monotonic()
        if now < self._reopen_at:
            return None
        try:
            path, lock = ownership.create_own(self.directory)
        except OSError as exc:
            self._reopen_at = now + REOPEN_INTERVAL
            self._reporter.warn("spool_open", "cannot create a spool file: %s", exc)
            return None
        try:
            file = SpoolFile(path, lock, self._synchronous, adopted=False)
        except Exception as exc:
            self._reopen_at = now + REOPEN_INTERVAL
            ownership.remove(path)
            lock.release(unlink=True)
            self._reporter.warn("spool_open", "cannot create spool file %s: %s", path, exc)
            return None
        file.cursor = first_seq
        return file

    def write(
        self,
        rows: list[Row],
        deletes: dict[SpoolFile, list[int]],
        retiring: dict[SpoolFile, bool],
    ) -> Written:
        """The I/O of one group commit (by the one writer, without the spool's lock): delete
        from each file, insert `rows` into this process's file with its deletes, then close the
        files retiring (deleted when drained, moved aside when damaged). A file found damaged
        on the way is moved aside at once."""
        damaged = [file for file, is_damaged in retiring.items() if is_damaged]
        own = self.own
        for file, seqs in deletes.items():
            if file is own or file.lost:
                continue
            try:
                file.write((), seqs)
            except sqlite3.Error as exc:
                if is_corrupt(exc):
                    damaged.append(file)
                self._reporter.warn("spool_delete", "cannot delete from %s: %s", file.path, exc)
        error = None
        if own is None and rows:
            own = self.open_own(rows[0][0])
        if own is None and rows:
            detail = "no spool file could be created; see the warnings logged"
            error = DeliveryError(DropReason.STORE_UNAVAILABLE, detail)
        elif own is not None and (rows or own in deletes):
            try:
                own.write(rows, deletes.get(own, ()))
            except sqlite3.Error as exc:
                error = _write_error(exc)
                if is_corrupt(exc):
                    damaged.append(own)
        for file, is_damaged in retiring.items():
            if not is_damaged:
                discard(file)
        return Written(own, error, [(file, quarantine(file)) for file in damaged])

    def next_to_read(self) -> SpoolFile | None:
        """The oldest file with rows not yet handed out."""
        for file in self.adopted:
            if file.untaken:
                return file
        own = self.own
        return own if own is not None and own.untaken else None

    def all(self) -> list[SpoolFile]:
        return [*self.adopted, *([self.own] if self.own is not None else [])]

    def drop(self, file: SpoolFile) -> None:
        """Stop using `file` (it is drained or lost); the caller closes it."""
        if file in self.adopted:
            self.adopted.remove(file)
        elif file is self.own:
            self.own = None

    def detach(self) -> list[SpoolFile]:
        """Stop using every file (at shutdown); the caller closes them with `close_all`."""
        files = self.all()
        self.adopted = []
        self.own = None
        return files

    def forget_all(self) -> None:
        """In a forked child: leave every file to the parent."""
        for file in self.all():
            file.forget()
        self.adopted = []
        self.own = None


def _write_error(exc: sqlite3.Error) -> DeliveryError:
    """Why rows could not be written: a damaged file (`store_corrupt`), or a spool the disk
    refused, full or failing (`store_unavailable`)."""
    if is_corrupt(exc):
        return DeliveryError(DropReason.STORE_CORRUPT, f"spool file: {exc}")
    what = "the disk is full" if is_disk_full(exc) else "the spool cannot be written"
    return DeliveryError(DropReason.STORE_UNAVAILABLE, f"{what}: {exc}")


def close_all(files: list[SpoolFile]) -> None:
    """At shutdown: delete the files that hold nothing, unlock the others for the next start."""
    for file in files:
        if file.remaining:
            file.close()
            file.lock.release(unlink=False)
        else:
            discard(file)


def discard(file: SpoolFile) -> None:
    """Close a file that holds nothing more and delete it, then its lock."""
    file.close()
    ownership.remove(file.path)
    file.lock.release(unlink=True)


def quarantine(file: SpoolFile) -> str:
    """Close a damaged file and move it aside; returns where it went."""
    file.close()
    target = _move_aside(file.path)
    file.lock.release(unlink=True)
    return target


def _move_aside(path: str) -> str:
    try:
        return ownership.quarantine(path)
    except OSError as exc:
        logger.warning("cannot move spool file %s into quarantine: %s", path, exc)
        return path
