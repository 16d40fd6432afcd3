"""The buffer between the calling threads and the workers: its interface, and the memory one.

`Buffer` is what the client, the workers and the delivery loop use; `MemoryBuffer` (below) and
the durable `trackline.spool.Spool` implement it. Both keep their accounting in a `Ledger`
under the same lock as what they store, so every transition is counted exactly once.

`MemoryBuffer` is a bounded FIFO of encoded messages: immutable JSON bytes, so queued memory is
the wire size plus a small constant, and a batch is a byte join. The bound is both a count
(`max_queue_size`) and bytes (`max_queue_bytes`); when either is reached a new message is
dropped and counted, or the caller waits a bounded time if it chose to block.

Flushes wait for sequence numbers: every message that enters gets one, and a flush called when N
messages had entered is done once the first N have all left the queue and no batch holding
any of them is still in flight.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from trackline.batch import Batch
from trackline.errors import DeliveryError
from trackline.ledger import Ledger
from trackline.stats import Counters, DropReason
from trackline.wire import batch_bytes


class Buffer(Protocol):
    """Where accepted messages wait for a worker, and where each one's fate is recorded.

    Every message a call accepts ends in exactly one of: delivered, dropped with a reason, or
    (durable mode only, `can_requeue`) given back to wait for a later attempt.
    """

    #: The client's accounting; `counters.snapshot()` is `client.stats`.
    counters: Counters
    #: Whether a part whose attempt ran out can wait here for a later one (`requeue`), rather
    #: than being dropped.
    can_requeue: bool

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None) -> DeliveryError | None:
        """Queue one message; the reason it was dropped instead (counted either way)."""
        ...

    def admit(self, data: bytes) -> Batch | None:
        """One message to send on the calling thread (sync mode): in flight at once; None when
        the buffer is sealed (counted as dropped, `closed`)."""
        ...

    # -- workers -----------------------------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, wait: float) -> Batch | None:
        """Wait up to `wait` seconds for a full batch (or a flush), then take what is there:
        at most `max_items` messages whose sizes plus separators stay within `max_bytes`."""
        ...

    def settle(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        """Part [start, end) was delivered (reason None, `rejected` of it refused one by one)
        or dropped for `reason`; False, changing nothing, when it was already settled."""
        ...

    def requeue(self, batch: Batch, start: int, end: int) -> bool:
        """Give part [start, end) back for a later attempt (`can_requeue` only); False when it
        was already settled."""
        ...

    def split(self, batch: Batch, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """Split an open part in halves (a 413); () when it was already settled."""
        ...

    def finish(self, batch: Batch) -> None:
        """The worker is done with `batch` (its callbacks ran): wakes flushes."""
        ...

    # -- flush, shutdown, fork ---------------------------------------------------------------

    def request_flush(self) -> int:
        """Ask workers to send everything queued now, partial batches too; returns a target."""
        ...

    def wait_flushed(self, target: int, deadline: float | None) -> bool:
        """Wait until every message numbered below `target` is settled, or `deadline` passes."""
        ...

    def seal(self) -> None:
        """Refuse new messages from now on (`closed`); those queued still go out."""
        ...

    def close(self) -> None:
        """Stop handing out batches and wake every waiting thread."""
        ...

    def abandon(self, reason: str) -> list[bytes]:
        """End of shutdown: settle what is left (dropped for `reason`, or kept on disk);
        returns the messages dropped."""
        ...

    def reset_after_fork(self) -> None:
        """In a forked child: start empty with fresh locks; the parent keeps what it had."""
        ...

    def __len__(self) -> int:
        """Messages waiting to be taken."""
        ...


def closed() -> DeliveryError:
    """The error of a message that came after `shutdown()`."""
    return DeliveryError(DropReason.CLOSED, "the client was shut down")


def fitting(queue: Iterable[bytes], max_items: int, max_bytes: int) -> int:
    """How many messages from the front make one batch: at least one, at most `max_items`,
    their sizes plus one separator each within `max_bytes`. (The collector's `tracking-api`
    destination cuts its requests with it, so that each is one batch of this buffer.)"""
    ends = list(itertools.accumulate(map(len, itertools.islice(queue, max_items))))
    # What the batch up to message i takes grows with i.
    fitting = bisect.bisect_right(
        range(len(ends)), max_bytes, key=lambda i: batch_bytes(ends[i], i + 1)
    )
    return max(fitting, 1)


class MemoryBuffer:
    """Bounded FIFO of encoded messages in memory; the `Buffer` of a client without a spool."""

    can_requeue = False

    def __init__(self, max_items: int, max_bytes: int, flush_at: int) -> None:
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._flush_at = flush_at
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._ledger = Ledger(self._lock)
        self.counters = self._ledger.counters
        self._items: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        #: Sequence number of the next message to leave the queue.
        self._taken = 0
        self._sealed = False
        self._closed = False

    def reset_after_fork(self) -> None:
        self._init_state()

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None = None) -> DeliveryError | None:
        """Decided under the lock, so a message is never queued after `seal()`."""
        size = len(data)
        # acquire/try/release costs a third less than `with` here, on every call; nothing
        # between acquire() returning and `try` can raise.
        lock = self._lock
        lock.acquire()
        try:
            counters = self.counters
            counters.enqueued += 1
            items = self._items
            full = len(items) >= self._max_items or self._bytes + size > self._max_bytes
            if self._sealed or (
                full and (block_timeout is None or not self._wait_for_room(size, block_timeout))
            ):
                error = (
                    closed()
                    if self._sealed
                    else DeliveryError(DropReason.QUEUE_FULL, "the buffer is full")
                )
                counters.add_dropped(error.reason, 1)
                return error
            items.append(data)
            self._bytes += size
            self._ledger.entered += 1
            counters.queued += 1
            if len(items) == self._flush_at:
                self._ready.notify()
            return None
        finally:
            lock.release()

    def _wait_for_room(self, size: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self._items) >= self._max_items or self._bytes + size > self._max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._sealed:
                return False
            self._room.wait(remaining)
        return True

    def admit(self, data: bytes) -> Batch | None:
        with self._lock:
            if self._sealed:
                self.counters.enqueued += 1
                self.counters.add_dropped(DropReason.CLOSED, 1)
                return None
            ledger = self._ledger
            batch = Batch([data], ledger.entered)
            ledger.entered += 1
            self._taken += 1
            ledger.admitted(batch)
            return batch

    # -- workers -----------------------------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, wait: float) -> Batch | None:
        """None when nothing is queued or the buffer is closed."""
        with self._lock:
            if not self._closed and not self._batch_ready():
                self._ready.wait(wait)
            if self._closed or not self._items:
                return None
            # The calling threads wait on this lock, so the batch is cut with C-level loops.
            queue = self._items
            count = len(queue)
            if count <= max_items and batch_bytes(self._bytes, count) <= max_bytes:
                items = list(queue)
                queue.clear()
                self._bytes = 0
            else:
                count = fitting(queue, max_items, max_bytes)
                popleft = queue.popleft
                items = [popleft() for _ in range(count)]
                self._bytes -= sum(map(len, items))
            batch = Batch(items, self._taken)
            self._taken += count
            self._ledger.taken(batch)
            self._room.notify_all()
            return batch

    def _batch_ready(self) -> bool:
        return len(self._items) >= self._flush_at or (
            self._taken < self._ledger.flush_target and bool(self._items)
        )

    def settle(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        with self._lock:
            return self._ledger.settle(batch, start, end, reason, rejected)

    def requeue(self, batch: Batch, start: int, end: int) -> bool:
        """Memory mode drops what ran out of attempts instead (`can_requeue` is False)."""
        raise NotImplementedError("the memory buffer drops what ran out of attempts")

    def split(self, batch: Batch, start: int, end: int) -> tuple[tuple[int, int], ...]:
        with self._lock:
            return batch.split(start, end)

    def finish(self, batch: Batch) -> None:
        with self._lock:
            self._ledger.finish(batch)

    # -- flush and shutdown ------------------------------------------------------------------

    def request_flush(self) -> int:
        with self._lock:
            self._ready.notify_all()
            return self._ledger.request_flush()

    def wait_flushed(self, target: int, deadline: float | None) -> bool:
        ledger = self._ledger
        with self._lock:
            return ledger.wait(
                lambda: self._taken >= target and not ledger.holds_before(target), deadline
            )

    def seal(self) -> None:
        with self._lock:
            self._sealed = True
            self._room.notify_all()

    def close(self) -> None:
        with self._lock:
            self._sealed = self._closed = True
            self._ready.notify_all()
            self._room.notify_all()
            self._ledger.progress.notify_all()

    def abandon(self, reason: str) -> list[bytes]:
        """Drop everything queued or in flight for `reason`; returns those messages.

        In-flight parts settled here are ignored when their worker reports on them later.
        """
        with self._lock:
            leftovers = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._taken += len(leftovers)
            for batch, parts in self._ledger.release_in_flight():
                for start, end in parts:
                    leftovers.extend(batch.messages(start, end))
            counters = self.counters
            if leftovers:
                counters.add_dropped(reason, len(leftovers))
            counters.queued = 0
            counters.in_flight = 0
            self._ledger.progress.notify_all()
            return leftovers

    def __len__(self) -> int:
        return len(self._items)
