"""A batch: messages a worker took together, held once as their request body, settled in parts.

Queued messages are separate `bytes` objects (each call encodes its own). A batch in flight
may wait minutes on retries, so it keeps its messages only once, as the body of its request
(`{"batch":[m0,m1,...],"sentAt":"..."}`) plus where each message ends in it: no list of the
messages beside a body, and no new body per attempt: an attempt rewrites the 24 bytes of
`sentAt` in place. Every body a worker allocates stays in its thread's malloc arena after it
is freed, so one body per batch is what an outage with several workers costs, not three. A
message is a slice of the body when a callback, a split or the spool needs it.

The body is joined on the worker's thread at the first attempt, not when the batch is cut
under the buffer's lock, which the calling threads wait on.

A batch is settled part by part: a 413 splits a part in halves, and each part ends delivered,
dropped or given back (durable mode) exactly once. Which parts are still open is kept here;
the buffer changes it under its lock (`open_parts`, `close`, `split`, `close_all`).
"""

from __future__ import annotations

import array
import itertools
import operator
from typing import Final

from trackline.wire import BATCH_END, BATCH_HEAD, BATCH_MIDDLE, TIMESTAMP_CHARS, envelope

HEAD: Final = BATCH_HEAD
_TAIL: Final = len(BATCH_END) + TIMESTAMP_CHARS
_NO_SENT_AT: Final = b"0" * TIMESTAMP_CHARS


class Batch:
    """Messages taken together, in order; `first_seq` is the sequence number of the first."""

    __slots__ = ("_body", "_ends", "_items", "_open", "first_seq")

    def __init__(self, items: list[bytes], first_seq: int) -> None:
        self.first_seq = first_seq
        #: The messages until the body is joined, then None.
        self._items: list[bytes] | None = items
        self._body = bytearray()
        #: Where message i ends in the body; it starts after the separator ending message i-1.
        self._ends: array.array[int] = array.array("I")
        #: start index -> end index of every part not yet settled.
        self._open: dict[int, int] = {0: len(items)}

    def __len__(self) -> int:
        items = self._items
        return len(items) if items is not None else len(self._ends)

    # -- the messages --------------------------------------------------------------------------

    def _join(self, stamp: bytes) -> None:
        """Hold the messages as one request body from now on (the worker's thread, unlocked)."""
        items = self._items
        if items is None:
            return
        head = len(HEAD)
        # C-level iterators: 2,500 offsets cost microseconds.
        ends = array.array(
            "I", map(operator.add, itertools.accumulate(map(len, items)), itertools.count(head))
        )
        # The head and tail go onto the first and last message so that the body is copied
        # once, by the join.
        parts = list(items)
        parts[0] = HEAD + parts[0]
        parts[-1] = parts[-1] + BATCH_MIDDLE + stamp + BATCH_END
        self._body = bytearray(b",").join(parts)
        self._ends = ends
        # Readers (a shutdown settling this batch meanwhile) look at the items first: they
        # stay until the body they would read instead is complete.
        self._items = None

    def messages(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """Messages [start, end) as separate bytes."""
        items = self._items
        if items is not None:
            return items[start:end]
        ends = self._ends
        stop = len(ends) if end is None else min(end, len(ends))
        if start >= stop:
            return []
        first = len(HEAD) if start == 0 else ends[start - 1] + 1
        out = []
        with memoryview(self._body) as body:
            for index in range(start, stop):
                finish = ends[index]
                out.append(body[first:finish].tobytes())
                first = finish + 1
        return out

    def body(self, start: int, end: int, sent_at: str) -> bytes | bytearray:
        """The request body of part [start, end), sent at `sent_at` (UTC ISO-8601, ms, `Z`).

        The body of the whole batch is the one it holds, valid until the next call.
        """
        stamp = sent_at.encode()
        whole = start == 0 and end == len(self) and len(stamp) == TIMESTAMP_CHARS
        if whole and self._items is not None:
            self._join(stamp)
            return self._body
        self._join(_NO_SENT_AT)
        body, ends = self._body, self._ends
        if whole:
            cut = len(body) - _TAIL
            body[cut : cut + TIMESTAMP_CHARS] = stamp
            return body
        first = len(HEAD) if start == 0 else ends[start - 1] + 1
        with memoryview(body) as view:
            return envelope(view[first : ends[end - 1]], sent_at)

    # -- the parts (changed by the buffer under its lock) ---------------------------------------

    def is_open(self, start: int, end: int) -> bool:
        """Whether part [start, end) is still to be settled."""
        return self._open.get(start) == end

    def close(self, start: int, end: int) -> bool:
        """Mark part [start, end) settled; False (changing nothing) when it was not open."""
        if self._open.get(start) != end:
            return False
        del self._open[start]
        return True

    def split(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """Replace the open part [start, end) by its two halves; () when it is not open."""
        if self._open.get(start) != end:
            return ()
        middle = (start + end) // 2
        self._open[start] = middle
        self._open[middle] = end
        return (start, middle), (middle, end)

    def open_parts(self) -> list[tuple[int, int]]:
        """The parts still open, in order."""
        return sorted(self._open.items())

    def close_all(self) -> list[tuple[int, int]]:
        """Settle every open part at once (shutdown); returns them, in order."""
        parts = self.open_parts()
        self._open.clear()
        return parts

    @property
    def settled(self) -> bool:
        """Whether every part is settled."""
        return not self._open
