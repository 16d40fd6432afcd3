"""Group commit, and the one place the spool's lock is let go: the writer's I/O.

A commit per call would make concurrent callers queue behind one write each. Here a caller
appends its row to the pending group. The first to append to an empty group is its leader: as
soon as no write is in progress, it writes the whole group in one transaction (with the deletes
of settled rows, and the files to retire), then wakes that group's callers. Whoever appends
meanwhile joins the next group. Each caller returns once its own row is written, or knows why it
could not be.

The locking contract: everything in the spool runs under its one lock, and `GroupCommit`'s
methods are called with it held. A commit has three phases: under the lock it takes what is
pending; it lets the lock go for the I/O alone (`write`, the only code that touches the files
while others may run); under the lock again, `settle` does the accounting, which never lets the
lock go. One writer at a time (`writing`); a caller that needs the files quiet waits for it
(`wait_idle`), and anything that must reach the disk is queued here for the next commit.

Callers of the group being written and of the next one wait on different conditions (by
generation parity), so a finished write wakes only the callers it concerns and the next leader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from trackline.errors import DeliveryError
from trackline.spool.file import Row, SpoolFile
from trackline.stats import DropReason

logger = logging.getLogger(__name__)

Outcome = TypeVar("Outcome")

#: Seconds a caller waits for its group's leader before writing the group itself.
LEADERLESS_AFTER: Final = 0.05

#: The I/O of one commit, run without the lock: (rows to insert into this process's file,
#: seqs to delete per file, files to retire: True when damaged, to move aside, False when
#: drained, to delete).
Write = Callable[[list[Row], dict[SpoolFile, list[int]], dict[SpoolFile, bool]], Outcome]
#: The accounting of one commit, with the lock: (rows, the ordinals of admitted rows, what the
#: write did) -> why the rows failed, if they did.
Settle = Callable[[list[Row], set[int], Outcome], DeliveryError | None]


class GroupCommit(Generic[Outcome]):
    """The pending writes of a spool and its one writer; see the module docstring."""

    def __init__(
        self, lock: threading.Lock, write: Write[Outcome], settle: Settle[Outcome]
    ) -> None:
        self._lock = lock
        self._write = write
        self._settle = settle
        self._turn = threading.Condition(lock)
        self._done = (threading.Condition(lock), threading.Condition(lock))
        self.pending: list[Row] = []
        self._admitted: set[int] = set()
        #: Seqs to delete with the next write, per file.
        self._deletes: dict[SpoolFile, list[int]] = {}
        #: Files to close and delete (False) or move aside (True) with the next write.
        self._retiring: dict[SpoolFile, bool] = {}
        self.writing = False
        self._generation = 0
        #: Groups written so far (they are written in order).
        self._finished = 0
        #: Every ordinal below it is written, or failed with its error in `_failed`.
        self.durable = 0
        self._failed: dict[int, DeliveryError] = {}

    # -- what the next commit writes ---------------------------------------------------------

    def add(self, row: Row, *, admitted: bool = False) -> DeliveryError | None:
        """Append `row` and return once it is written; the error if it was not."""
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
                # A wait that timed out may have been written meanwhile: check again.
                if not done.wait(LEADERLESS_AFTER) and not self.writing and self.durable <= ordinal:
                    self.commit()
        return self._failed.pop(ordinal, None)

    def delete(self, file: SpoolFile, seqs: list[int]) -> None:
        """Delete rows of `file` with the next write."""
        if file not in self._retiring:
            self._deletes.setdefault(file, []).extend(seqs)

    def retire(self, file: SpoolFile, *, damaged: bool) -> None:
        """Close `file` with the next write: move it aside when damaged, else delete it (it
        holds nothing more); its pending deletes are moot."""
        self._deletes.pop(file, None)
        self._retiring[file] = damaged

    # -- making it happen --------------------------------------------------------------------

    def write_pending(self) -> None:
        """Return once the deletes and retirements queued so far are written."""
        if not self._deletes and not self._retiring:
            return
        carrier = self._generation
        while self._finished <= carrier:
            if self.writing:
                self._turn.wait()
            else:
                self.commit()

    def commit_if_idle(self) -> None:
        """Write what is pending now if nobody is writing: idle workers use it so that deletes
        do not wait for the next call."""
        if (self._deletes or self.pending or self._retiring) and not self.writing:
            self.commit()

    def drain(self) -> None:
        """Write until nothing is pending and nobody writes."""
        while self.writing or self.pending or self._deletes or self._retiring:
            if self.writing:
                self._turn.wait()
            else:
                self.commit()

    def wait_idle(self) -> None:
        """Wait until no write is under way: the files are quiet until the lock is let go."""
        while self.writing:
            self._turn.wait()

    def commit(self) -> None:
        """Write everything pending as the one writer (nobody writing)."""
        self.writing = True
        generation = self._generation
        self._generation += 1
        rows, self.pending = self.pending, []
        admitted, self._admitted = self._admitted, set()
        deletes, self._deletes = self._deletes, {}
        retiring, self._retiring = self._retiring, {}
        error: DeliveryError | None = None
        try:
            self._lock.release()
            try:
                outcome = self._write(rows, deletes, retiring)
            finally:
                self._lock.acquire()
            error = self._settle(rows, admitted, outcome)
        except Exception as exc:  # pragma: no cover - a bug; the callers must still return
            logger.exception("writing %d row(s) to the spool failed", len(rows))
            error = DeliveryError(DropReason.STORE_UNAVAILABLE, f"unexpected error: {exc!r}")
        finally:
            if rows:
                if error is not None:
                    self._failed.update((row[0], error) for row in rows)
                self.durable = rows[-1][0] + 1
            self.writing = False
            self._finished = generation + 1
            self._turn.notify_all()
            self._done[generation % 2].notify_all()
