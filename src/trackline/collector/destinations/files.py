"""The `file` kind: NDJSON, one file per UTC hour of writing: `PATH/2026-11-29/13.ndjson`.

A file being written is never seen half-written: the current hour goes to
`13.ndjson.part`, which is renamed to `13.ndjson` once the hour is over (at the first write or
idle moment after it). A batch is on disk (`fsync`) before its jobs are settled delivered, so a
crash never loses a line it reported written; a crash in the middle of a write may leave a
partial last line, which the next start cuts off before appending (those jobs were never
settled and are written again: at least once, each line carrying its `messageId`).

One process writes a path at a time: a sender writes only while it holds an exclusive lock
on `PATH/.trackline-writer.lock`, so of several collector processes routing to the same path
(`--processes N`, or two collectors sharing a PostgreSQL store and a disk) one writes and the
others claim nothing for it; when that one stops or dies, the kernel drops its lock and
another takes over, finishing the part files it left.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from trackline.collector.destinations.config import FileSettings
from trackline.collector.destinations.sender import DELIVERED, HELD, Result, unanswered
from trackline.collector.store import Job
from trackline.spool.ownership import FileLock

logger = logging.getLogger(__name__)

PART: Final = ".part"
#: The lock file whose holder is the one process writing a path.
LOCK_NAME: Final = ".trackline-writer.lock"


def _hour_file(root: Path, moment: datetime) -> Path:
    return root / moment.strftime("%Y-%m-%d") / moment.strftime("%H.ndjson")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_partial_line(part: Path) -> None:
    """Drop a last line a crash left without its newline."""
    with part.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        position = size
        chunk = 4096
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            data = handle.read(position - start)
            if position == size and data.endswith(b"\n"):
                return
            newline = data.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)


class FileSender:
    """Appends to the current hour's part file; renames finished hours."""

    def __init__(self, settings: FileSettings, clock: Callable[[], datetime] | None = None) -> None:
        self._root = settings.path
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self._current: Path | None = None
        self._handle: int | None = None
        self._lock: FileLock | None = None
        self._told = False

    def ready(self) -> bool:
        """Whether this sender holds the path's lock, taking it when it is free; the first
        time, it finishes what earlier writers left. A path that cannot be created or locked
        for another reason is left to `send`, which reports the error."""
        if self._lock is not None:
            return True
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            lock = FileLock.take(str(self._root / LOCK_NAME), create_new=False)
        except OSError:
            return True
        if lock is None:
            if not self._told:
                logger.info("another process writes %s; this one leaves it the writing", self._root)
                self._told = True
            return False
        self._lock = lock
        try:
            self._finish_leftovers()
        except OSError as exc:
            logger.warning("finishing the part files left in %s failed: %s", self._root, exc)
        return True

    def _finish_leftovers(self) -> None:
        """Part files of past hours (a crash, a stop) become final files now."""
        if not self._root.exists():
            return
        current = _hour_file(self._root, self._clock())
        for part in self._root.glob(f"*/*.ndjson{PART}"):
            if part.with_suffix("") != current:
                _cut_partial_line(part)
                self._publish(part)

    @staticmethod
    def _publish(part: Path) -> None:
        final = part.with_suffix("")
        if final.exists():
            # The hour's file exists already (written before a restart in the same hour):
            # add to it rather than replace it.
            with final.open("ab") as out, part.open("rb") as extra:
                out.write(extra.read())
                out.flush()
                os.fsync(out.fileno())
            part.unlink()
        else:
            os.replace(part, final)
        _fsync_dir(part.parent)

    def _open(self, target: Path) -> int:
        if self._current == target and self._handle is not None:
            return self._handle
        self._rotate()
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + PART)
        existed = part.exists()
        if existed:
            _cut_partial_line(part)
        self._handle = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._current = target
        if not existed:
            _fsync_dir(target.parent)
        return self._handle

    def _rotate(self) -> None:
        if self._handle is None or self._current is None:
            return
        os.close(self._handle)
        self._handle = None
        self._publish(self._current.with_name(self._current.name + PART))
        self._current = None

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        if not self.ready():
            return [HELD] * len(jobs)
        data = "".join(job.body + "\n" for job in jobs).encode()
        try:
            handle = self._open(_hour_file(self._root, self._clock()))
            view = memoryview(data)
            while view:
                written = os.write(handle, view)
                view = view[written:]
            os.fsync(handle)
        except OSError as exc:
            self._abandon()
            return [unanswered(f"{type(exc).__name__}: {exc}")] * len(jobs)
        return [DELIVERED] * len(jobs)

    def _abandon(self) -> None:
        """After a failed write: reopen next time (cutting any partial line)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.close(self._handle)
        self._handle = None
        self._current = None

    def idle(self) -> None:
        if self._current is not None and self._current != _hour_file(self._root, self._clock()):
            with contextlib.suppress(OSError):
                self._rotate()

    def close(self) -> None:
        """Keep the part file for the next start in the same hour (it finishes it), and let
        another process take the path."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
        if self._lock is not None:
            self._lock.release(unlink=False)
            self._lock = None
