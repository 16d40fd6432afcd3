"""Batches of the spool: a batch that knows the rows its messages came from, and the parts held
back after their attempt ran out.

In durable mode an attempt that runs out of retries or of `delivery_timeout` does not drop its
messages: the delivery loop requeues the part, which waits here, in front of newer rows, until
a pause (`backoff_cap`) is over. Its messages stay in memory meanwhile (their rows stay on disk):
at most one batch per worker, since nothing newer is handed out while a part waits.
"""

from __future__ import annotations

import array
import bisect
import time
from collections.abc import Callable

from trackline.batch import Batch
from trackline.spool.file import Row, SpoolFile


class SpoolBatch(Batch):
    """A batch that knows the file and the rows its messages came from (None: not on disk)."""

    __slots__ = ("created", "file", "seqs")

    def __init__(self, rows: list[Row], first_seq: int, file: SpoolFile | None) -> None:
        super().__init__([row[2] for row in rows], first_seq)
        self.file = file
        self.seqs = array.array("q", [row[0] for row in rows])
        self.created = array.array("d", [row[1] for row in rows])

    def rows(self, start: int = 0, end: int | None = None) -> list[Row]:
        """Part [start, end) as rows again."""
        seqs, created = self.seqs[start:end], self.created[start:end]
        return list(zip(seqs, created, self.messages(start, end), strict=True))


class HeldParts:
    """Requeued parts, oldest first, held until a pause after the last one is over."""

    def __init__(self, pause: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._pause = pause
        self._clock = clock
        self._parts: list[SpoolBatch] = []
        self._until = 0.0

    def hold(self, part: SpoolBatch) -> None:
        """Keep `part` for the next attempt, in order of its messages, and restart the pause."""
        bisect.insort(self._parts, part, key=lambda held: held.first_seq)
        self._until = self._clock() + self._pause

    def wait_left(self) -> float:
        """Seconds until the oldest part may go again (0 when it may)."""
        return max(0.0, self._until - self._clock())

    def pop(self) -> SpoolBatch:
        """The oldest part."""
        return self._parts.pop(0)

    def holds_before(self, target: int) -> bool:
        """Whether a held part holds messages numbered below `target` (for flushes)."""
        return any(part.first_seq < target for part in self._parts)

    def clear(self) -> None:
        self._parts.clear()

    def __len__(self) -> int:
        """Messages held."""
        return sum(len(part) for part in self._parts)

    def __bool__(self) -> bool:
        return bool(self._parts)
