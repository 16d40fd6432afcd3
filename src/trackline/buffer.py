"""The bounded in-memory FIFO of encoded messages between the calling threads and the workers.

It holds immutable JSON bytes, so queued memory is the wire size plus a small constant, and a
batch is a byte join. The bound is both a count (`max_queue_size`) and bytes
(`max_queue_bytes`); when either is reached a new message is dropped and counted, or the caller
waits a bounded time if it chose to block.

The buffer also tracks what a `flush()` waits for. Every message that enters gets a sequence
number; a flush called when N messages had entered is done once the first N have all left the
queue and no batch holding any of them is still in flight. Batches are handed out whole and
resolved in parts (a 413 splits them), so each batch remembers which index ranges are unresolved.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time
from collections.abc import Iterator

from trackline.errors import DeliveryError
from trackline.stats import Counters, DropReason


class Batch:
    """Messages taken together by a worker; resolved part by part, each exactly once."""

    __slots__ = ("_unresolved", "first_seq", "items", "size")

    def __init__(self, items: list[bytes], first_seq: int, size: int) -> None:
        self.items = items
        self.first_seq = first_seq
        self.size = size
        #: start index -> end index of every part not yet delivered or dropped.
        self._unresolved: dict[int, int] = {0: len(items)}

    def __len__(self) -> int:
        return len(self.items)

    def split(self, start: int, end: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Replace the unresolved part [start, end) by its two halves."""
        middle = (start + end) // 2
        del self._unresolved[start]
        self._unresolved[start] = middle
        self._unresolved[middle] = end
        return (start, middle), (middle, end)

    def unresolved_items(self) -> Iterator[bytes]:
        """The messages of every part that is still unresolved."""
        for start, end in sorted(self._unresolved.items()):
            yield from self.items[start:end]


def closed() -> DeliveryError:
    """The error of a message that came after `shutdown()`."""
    return DeliveryError(DropReason.CLOSED, "the client was shut down")


def _fitting(queue: collections.deque[bytes], max_items: int, max_bytes: int) -> int:
    """How many messages from the front make one batch: at least one, at most `max_items`,
    their sizes plus one separator each within `max_bytes`."""
    ends = list(itertools.accumulate(map(len, itertools.islice(queue, max_items))))
    # The batch up to message i takes ends[i] + i + 1 bytes, which grows with i.
    fitting = bisect.bisect_right(range(len(ends)), max_bytes, key=lambda i: ends[i] + i + 1)
    return max(fitting, 1)


class MemoryBuffer:
    """Bounded FIFO of encoded messages, with the client's counters under the same lock."""

    def __init__(self, max_items: int, max_bytes: int, flush_at: int) -> None:
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._flush_at = flush_at
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self.counters = Counters(self._lock)
        self._items: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._entered = 0
        self._taken = 0
        self._flush_target = 0
        self._in_flight: dict[int, Batch] = {}
        #: No new message is queued once sealed; queued ones still go out.
        self._sealed = False
        self._closed = False

    def reset_after_fork(self) -> None:
        """Start empty with fresh locks: the parent process still owns and sends what it had."""
        self._init_state()

    # -- calling threads ---------------------------------------------------------------------

    def put(self, data: bytes, block_timeout: float | None = None) -> DeliveryError | None:
        """Queue one message; the reason it was dropped instead (buffer full, or sealed).

        Decided under the lock, so a message is never queued after `seal()`: it counts as
        enqueued either way, and as dropped when an error is returned.
        """
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
            self._entered += 1
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
        """Account one message sent on the calling thread (sync mode): in flight at once.

        None once sealed: the message is counted as dropped (`closed`) instead.
        """
        with self._lock:
            if self._sealed:
                self.counters.enqueued += 1
                self.counters.add_dropped(DropReason.CLOSED, 1)
                return None
            batch = Batch([data], self._entered, len(data) + 1)
            self._entered += 1
            self._taken += 1
            self._in_flight[id(batch)] = batch
            self.counters.enqueued += 1
            self.counters.in_flight += 1
            return batch

    def count_dropped(self, reason: str) -> None:
        """Count one message accepted and dropped at once, never queued."""
        with self._lock:
            self.counters.enqueued += 1
            self.counters.add_dropped(reason, 1)

    # -- workers -----------------------------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, wait: float) -> Batch | None:
        """Wait up to `wait` seconds for a full batch (or a flush), then take what is there.

        Returns None when nothing is queued or the buffer is closed. A batch holds at most
        `max_items` messages whose sizes plus separators stay within `max_bytes`.
        """
        with self._lock:
            if not self._closed and not self._batch_ready():
                self._ready.wait(wait)
            if self._closed or not self._items:
                return None
            # The calling threads wait on this lock, so the batch is cut with C-level loops.
            queue = self._items
            count = len(queue)
            if count <= max_items and self._bytes + count <= max_bytes:
                items = list(queue)
                queue.clear()
                size = self._bytes + count
            else:
                count = _fitting(queue, max_items, max_bytes)
                popleft = queue.popleft
                items = [popleft() for _ in range(count)]
                size = sum(map(len, items)) + count
            batch = Batch(items, self._taken, size)
            self._taken += count
            self._bytes -= size - count
            self._in_flight[id(batch)] = batch
            self.counters.queued -= count
            self.counters.in_flight += count
            self._room.notify_all()
            return batch

    def backlogged(self) -> bool:
        """Whether a full batch is waiting: read without the lock, a hint for adding a worker."""
        return len(self) >= self._flush_at

    def _batch_ready(self) -> bool:
        return len(self._items) >= self._flush_at or (
            self._taken < self._flush_target and bool(self._items)
        )

    def resolve(
        self, batch: Batch, start: int, end: int, reason: str | None, rejected: int = 0
    ) -> bool:
        """Mark part [start, end) of `batch` delivered (reason None) or dropped for `reason`.

        With reason None, `rejected` of the part's messages were refused one by one inside a
        successful answer and count as dropped (`rejected`), the rest as delivered. Returns
        False, changing nothing, when the part was already settled (by `abandon`).
        """
        with self._lock:
            if batch._unresolved.get(start) != end:
                return False
            del batch._unresolved[start]
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

    def finish(self, batch: Batch) -> None:
        """Called when a worker is done with `batch`, after its callbacks ran: wakes flushes.

        A batch with unresolved parts stays in flight for `abandon` to settle.
        """
        with self._lock:
            if not batch._unresolved and self._in_flight.pop(id(batch), None) is not None:
                self._progress.notify_all()

    def split(self, batch: Batch, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """Split an unresolved part in two; returns () when it was already settled."""
        with self._lock:
            if batch._unresolved.get(start) != end:
                return ()
            return batch.split(start, end)

    def count_retry(self) -> None:
        """Count one retried request."""
        with self._lock:
            self.counters.retries += 1

    def count_request(self, body_bytes: int, delivered: bool) -> None:
        """Count one request sent (and the batches delivered)."""
        with self._lock:
            self.counters.bytes_sent += body_bytes
            if delivered:
                self.counters.batches += 1

    # -- flush and shutdown ------------------------------------------------------------------

    def request_flush(self) -> int:
        """Ask workers to send everything queued now, partial batches too; returns a target."""
        with self._lock:
            self._flush_target = max(self._flush_target, self._entered)
            self._ready.notify_all()
            return self._entered

    def wait_flushed(self, target: int, deadline: float | None) -> bool:
        """Wait until every message numbered below `target` is delivered or dropped."""
        with self._lock:
            while not self._flushed(target):
                if deadline is None:
                    self._progress.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
            return True

    def _flushed(self, target: int) -> bool:
        if self._taken < target:
            return False
        return all(batch.first_seq >= target for batch in self._in_flight.values())

    def seal(self) -> None:
        """Refuse new messages from now on (`closed`); those queued still go out."""
        with self._lock:
            self._sealed = True
            self._room.notify_all()

    def close(self) -> None:
        """Stop handing out batches and wake every waiting thread."""
        with self._lock:
            self._sealed = self._closed = True
            self._ready.notify_all()
            self._room.notify_all()
            self._progress.notify_all()

    def abandon(self, reason: str) -> list[bytes]:
        """Drop everything queued or in flight for `reason`; returns those messages.

        In-flight parts settled here are ignored when their worker reports on them later.
        """
        with self._lock:
            leftovers = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._taken += len(leftovers)
            for batch in self._in_flight.values():
                leftovers.extend(batch.unresolved_items())
                batch._unresolved.clear()
            self._in_flight.clear()
            counters = self.counters
            if leftovers:
                counters.add_dropped(reason, len(leftovers))
            counters.queued = 0
            counters.in_flight = 0
            self._progress.notify_all()
            return leftovers

    def __len__(self) -> int:
        return len(self._items)
