"""Group commit: callers append rows and wait; one of them at a time writes all that is pending.

A commit per call would make concurrent callers queue behind one write each. Here a caller
appends its row to the pending group. The first to append to an empty group is its leader: as
soon as no write is in progress, it writes the whole group in one transaction (with the deletes
of delivered rows), then wakes that group's callers. Whoever appends meanwhile joins the next
group. Each caller returns once its own row is written, or knows why it could not be.

Callers of the group being written and of the next one wait on different conditions (by
generation parity), so a finished write wakes only the callers it concerns and the next leader.
Everything here runs under the spool's lock, which is released only around the write itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Final, Generic, TypeVar

from trackline.errors import DeliveryError
from trackline.spool_file import Row, SpoolFile
from trackline.stats import DropReason

logger = logging.getLogger(__name__)

Outcome = TypeVar("Outcome")

#: Seconds a caller waits for its group's leader before writing the group itself.
LEADERLESS_AFTER: Final = 0.05


class GroupCommit(Generic[Outcome]):
    """Batches the writes of concurrent callers; `write` does the I/O, `settle` the accounting.

    `write(rows, deletes)` runs without the lock and returns an outcome; `settle(rows,
    admitted, outcome)` runs with the lock held and returns the error of the rows, if they
    failed. Ordinals (a row's first field) only grow, so "written" is one number: `durable`.
    """

    def __init__(
        self,
        lock: threading.Lock,
        write: Callable[[list[Row], dict[SpoolFile, list[int]]], Outcome],
        settle: Callable[[list[Row], set[int], Outcome], DeliveryError | None],
    ) -> None:
        self._lock = lock
        self._write = write
        self._settle = settle
        self._turn = threading.Condition(lock)
        self._done = (threading.Condition(lock), threading.Condition(lock))
        self.pending: list[Row] = []
        self._admitted: set[int] = set()
        #: Seqs to delete with the next write, per file.
        self.deletes: dict[SpoolFile, list[int]] = {}
        self.writing = False
        self._generation = 0
        #: Groups written so far (they are written in order).
        self._finished = 0
        #: Every ordinal below it is written, or failed with its error in `_failed`.
        self.durable = 0
        self._failed: dict[int, DeliveryError] = {}

    def add(self, row: Row, *, admitted: bool = False) -> DeliveryError | None:
        """Append `row` and return (lock held) once it is written; the error if it was not."""
        ordinal = row[0]
        leader = not self.pending
        self.pending.append(row)
        if admitted:
            self._admitted.add(ordinal)
        if leader:
            while self.durable <= ordinal:
                if self.writing:
                    self._turn.wait()
                else:
                    self.commit()
        else:
            done = self._done[self._generation % 2]
            while self.durable <= ordinal:
                # A leader interrupted by an exception (KeyboardInterrupt) leaves its group
                # without a writer: after a while, a follower writes it.
                if not done.wait(LEADERLESS_AFTER) and not self.writing:
                    self.commit()
        return self._failed.pop(ordinal, None)

    def delete(self, file: SpoolFile, seqs: Iterator[int] | list[int]) -> None:
        """Delete rows of `file` with the next write (lock held)."""
        self.deletes.setdefault(file, []).extend(seqs)

    def write_deletes(self) -> None:
        """Return (lock held) once the deletes queued so far are written."""
        if not self.deletes:
            return
        carrier = self._generation
        while self._finished <= carrier:
            if self.writing:
                self._turn.wait()
            else:
                self.commit()

    def commit_if_idle(self) -> None:
        """Write what is pending now if nobody is writing (lock held): idle workers use it so
        that deletes do not wait for the next call."""
        if (self.deletes or self.pending) and not self.writing:
            self.commit()

    def commit(self) -> None:
        """Write everything pending as the one writer (lock held, nobody writing)."""
        self.writing = True
        generation = self._generation
        self._generation += 1
        rows, self.pending = self.pending, []
        admitted, self._admitted = self._admitted, set()
        deletes, self.deletes = self.deletes, {}
        error: DeliveryError | None = None
        try:
            self._lock.release()
            try:
                outcome = self._write(rows, deletes)
            finally:
                self._lock.acquire()
            error = self._settle(rows, admitted, outcome)
        except Exception as exc:  # pragma: no cover - a bug; the callers must still return
            logger.exception("writing %d row(s) to the spool failed", len(rows))
            error = DeliveryError(DropReason.SPOOL_FULL, f"unexpected error: {exc!r}")
        finally:
            if rows:
                if error is not None:
                    self._failed.update((row[0], error) for row in rows)
                self.durable = rows[-1][0] + 1
            self.writing = False
            self._finished = generation + 1
            self._turn.notify_all()
            self._done[generation % 2].notify_all()

    def drain(self) -> None:
        """Write until nothing is pending and nobody writes (lock held)."""
        while self.writing or self.pending or self.deletes:
            if self.writing:
                self._turn.wait()
            else:
                self.commit()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer's role without writing rows (lock held): to close or move files."""
        while self.writing:
            self._turn.wait()
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
            self._turn.notify_all()
