"""Where every accepted message stands, shared by both buffers: the counters, the batches in
flight part by part, and what a flush waits for.

    enqueued == delivered + dropped + queued + in_flight

holds in every snapshot because each transition below moves a message from one term to another
in one step. A `Ledger` is plain state with no lock of its own: the buffer that owns it (memory
or spool) changes its storage and its ledger together under the buffer's one lock, which is
also the counters' lock, so a snapshot never sees half a transition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from trackline.batch import Batch
from trackline.stats import Counters, DropReason


class Ledger:
    """The accounting of one buffer; every method is called with the buffer's lock held."""

    def __init__(self, lock: threading.Lock) -> None:
        self.counters = Counters(lock)
        #: Wakes `flush()` callers when batches finish or messages are settled without one.
        self.progress = threading.Condition(lock)
        #: Sequence numbers handed out so far: a flush called now waits for those below it.
        self.entered = 0
        #: The highest sequence number a flush waits for; workers send partial batches below it.
        self.flush_target = 0
        self._in_flight: dict[int, Batch] = {}

    # -- batches in flight -------------------------------------------------------------------

    def taken(self, batch: Batch) -> None:
        """`batch` left the queue: its messages are in flight."""
        self._in_flight[id(batch)] = batch
        count = len(batch)
        self.counters.queued -= count
        self.counters.in_flight += count

    def admitted(self, batch: Batch) -> None:
        """`batch` was accepted straight into flight (sync mode): entered and in flight."""
        self._in_flight[id(batch)] = batch
        self.counters.enqueued += len(batch)
        self.counters.in_flight += len(batch)

    def settle(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        """Part [start, end) was delivered (reason None; `rejected` of it refused one by one)
        or dropped for `reason`. False, changing nothing, when it was already settled."""
        if not batch.close(start, end):
            return False
        count = end - start
        counters = self.counters
        counters.in_flight -= count
        if reason is None:
            counters.delivered += count - rejected
            if rejected:
                counters.add_dropped(DropReason.REJECTED, rejected)
        else:
            counters.add_dropped(reason, count)
        return True

    def requeued(self, batch: Batch, start: int, end: int) -> bool:
        """Part [start, end) went back to the queue; False when it was already settled."""
        if not batch.close(start, end):
            return False
        self.counters.in_flight -= end - start
        self.counters.queued += end - start
        return True

    def finish(self, batch: Batch) -> None:
        """A worker is done with `batch`: once every part is settled, flushes may see it gone.

        A batch with open parts stays in flight for shutdown to settle.
        """
        if batch.settled and self._in_flight.pop(id(batch), None) is not None:
            self.progress.notify_all()

    def holds_before(self, target: int) -> bool:
        """Whether a batch in flight holds messages numbered below `target`."""
        return any(batch.first_seq < target for batch in self._in_flight.values())

    def release_in_flight(self) -> list[tuple[Batch, list[tuple[int, int]]]]:
        """Settle nothing, forget every batch in flight (shutdown): each with its open parts,
        whose later reports are ignored. The caller accounts them."""
        released = [(batch, batch.close_all()) for batch in self._in_flight.values()]
        self._in_flight.clear()
        return released

    # -- flushes -----------------------------------------------------------------------------

    def request_flush(self) -> int:
        """A flush of everything entered so far; returns the target it waits for."""
        self.flush_target = max(self.flush_target, self.entered)
        return self.entered

    def wait(self, done: Callable[[], bool], deadline: float | None) -> bool:
        """Wait for progress until `done()` (True) or `deadline` (monotonic) passes (False)."""
        while not done():
            if deadline is None:
                self.progress.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.progress.wait(remaining)
        return True
