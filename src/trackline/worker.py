"""Background worker threads: wait for a batch (by count, flush or interval), deliver it, repeat.

The first thread starts lazily on the first message, so importing an app and forking it
(gunicorn `--preload`) starts no thread in the parent that the children would lose. More
threads, up to `workers`, start only when a backlog builds while the API answers: a worker that
took a full batch and left another full batch waiting starts the next one. An app sending a few
events a second keeps one thread and one connection; a burst towards a far API gets several
requests in flight, which is what throughput needs once each request costs a round trip.

While the API fails (no answer, 5xx, 429), only the first thread takes batches: more requests
in flight would add load to an API that struggles, and hold one more batch in memory each, for
nothing. The others finish what they hold and wait for an answer to come back. Threads are
daemons: the interpreter's exit hook, not thread joins, decides how long exit may wait.
"""

from __future__ import annotations

import logging
import threading
import time

from trackline.buffer import Buffer
from trackline.delivery import Delivery
from trackline.wire import BATCH_ROOM, MAX_BATCH_MESSAGES

logger = logging.getLogger(__name__)


class Workers:
    """The delivery threads of one client."""

    def __init__(
        self,
        buffer: Buffer,
        delivery: Delivery,
        stop: threading.Event,
        *,
        count: int,
        interval: float,
        flush_at: int,
        name: str,
    ) -> None:
        self._buffer = buffer
        self._delivery = delivery
        self._stop = stop
        self._count = count
        self._interval = interval
        self._flush_at = flush_at
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.started = False

    def start(self) -> None:
        """Start the first thread once; later calls do nothing."""
        with self._lock:
            if self.started or self._stop.is_set():
                return
            self._add_thread()
            self.started = True

    def _grow(self) -> None:
        """Start one more thread, if the limit allows, for a backlog one thread leaves behind."""
        with self._lock:
            if len(self._threads) < self._count and not self._stop.is_set():
                self._add_thread()

    def _add_thread(self) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(not self._threads,),
            name=f"{self._name}-{len(self._threads)}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def join(self, deadline: float) -> bool:
        """Wait for the threads to end, until `deadline` (monotonic); True if they all did."""
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self, first: bool) -> None:
        buffer = self._buffer
        delivery = self._delivery
        while not self._stop.is_set():
            if not first and not delivery.answering:
                self._stop.wait(self._interval)
                continue
            batch = buffer.take(MAX_BATCH_MESSAGES, BATCH_ROOM, self._interval)
            if batch is None:
                continue
            # A full batch still waiting: one more request in flight would help, if the API
            # answers.
            backlog = len(buffer) >= self._flush_at
            if backlog and delivery.answering and len(self._threads) < self._count:
                self._grow()
            try:
                self._delivery.deliver(batch)
            except Exception:  # pragma: no cover - a bug; keep the thread alive for the rest
                logger.exception("delivering a batch of %d message(s) failed", len(batch))
