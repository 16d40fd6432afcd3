"""Deliver one batch: POST it, read the answer, retry, split on 413, settle every message once.

This loop is shared by the background workers and by sync mode, so both follow the same retry
policy and the same accounting. It decides every message's outcome, and tells the buffer once:
delivered, dropped with a reason that is counted and reported, or, when an attempt runs out
of retries or of `delivery_timeout` and the buffer can keep it (durable mode), requeued: given
back to wait for a later attempt instead of dropped. The loop never raises into its caller;
waits go through the stop event so that shutdown interrupts them.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Final

from trackline.batch import Batch
from trackline.buffer import Buffer
from trackline.config import Config
from trackline.encoding import loads
from trackline.errors import DeliveryError
from trackline.messages import format_epoch
from trackline.report import Reporter
from trackline.retry import Action, RetryPolicy, classify, parse_retry_after
from trackline.stats import DropReason
from trackline.transport import Response, Transport

logger = logging.getLogger(__name__)

BATCH_PATH: Final = "/v1/batch"


class Throttle:
    """A pause shared by every worker of a client, set when the server sends Retry-After.

    One worker's 429 means the server wants the whole client to slow down, not just that
    worker: the others hold their next request until the pause ends.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._not_before = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` from now (never shortens an existing pause)."""
        self._not_before = max(self._not_before, self._clock() + seconds)

    def remaining(self) -> float:
        """Seconds until requests may go again."""
        return max(0.0, self._not_before - self._clock())


class Delivery:
    """Sends batches for one client; thread safe, one instance shared by all its workers."""

    def __init__(
        self,
        config: Config,
        transport: Transport,
        buffer: Buffer,
        reporter: Reporter,
        stop: threading.Event,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """`clock`, `wall_clock` and `wait` (sleep; True when interrupted by stop) are only
        replaced by tests that need to control time."""
        self._transport = transport
        self._buffer = buffer
        self._reporter = reporter
        self._timeout = config.delivery_timeout
        self._requeue_pause = config.backoff_cap
        self._policy = RetryPolicy(config.max_retries, config.backoff_base, config.backoff_cap)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._wall_clock = wall_clock
        self._wait = wait if wait is not None else stop.wait
        self.throttle = Throttle(clock)
        #: Whether the last answer was one to act on (not a failure worth a retry): the workers
        #: put more requests in flight only then. No answer yet counts as not answering.
        self.answering = False

    def deliver(self, batch: Batch) -> bool:
        """Settle every message of `batch`; True when all of them were delivered.

        Returns early (False) only when the client is stopping; shutdown settles the rest.
        """
        try:
            return self._deliver(batch)
        finally:
            self._buffer.finish(batch)

    def _deliver(self, batch: Batch) -> bool:
        delivered = True
        deadline = self._clock() + self._timeout
        parts: collections.deque[tuple[int, int]] = collections.deque([(0, len(batch))])
        retries = 0
        while parts:
            start, end = parts[0]
            pause = self.throttle.remaining()
            if pause > 0:
                if pause >= deadline - self._clock():
                    self._give_up(batch, parts, DropReason.DELIVERY_TIMEOUT, None, "Retry-After")
                    return False
                if self._wait(pause):
                    return False
            response = self._post(batch, start, end)
            verdict = classify(response.status)
            self.answering = verdict.action is not Action.RETRY
            if verdict.action is Action.DONE:
                parts.popleft()
                delivered = self._settle_success(batch, start, end, response.body) and delivered
            elif verdict.action is Action.SPLIT:
                parts.popleft()
                if end - start == 1:
                    delivered = False
                    self._drop(batch, start, end, DropReason.TOO_LARGE, response, "too large")
                else:
                    parts.extendleft(reversed(self._buffer.split(batch, start, end)))
            elif verdict.action is Action.DROP:
                parts.popleft()
                delivered = False
                assert verdict.reason is not None
                self._drop(batch, start, end, verdict.reason, response, "refused by the server")
            else:
                retry_after = parse_retry_after(response.retry_after, self._wall_clock())
                delay, reason = self._policy.next_delay(
                    retries, retry_after, deadline - self._clock(), self._rng
                )
                if delay is None:
                    assert reason is not None
                    self._give_up(batch, parts, reason, response, _describe(response))
                    return False
                if retry_after is not None:
                    self.throttle.pause(retry_after)
                retries += 1
                self._buffer.counters.count_retry()
                self._reporter.warn(
                    "retry", "request failed (%s); retrying in %.2fs", _describe(response), delay
                )
                if self._wait(delay):
                    return False
        return delivered

    def _post(self, batch: Batch, start: int, end: int) -> Response:
        body = batch.body(start, end, format_epoch(self._wall_clock()))
        response = self._transport.post(BATCH_PATH, body)
        status = response.status
        self._buffer.counters.count_request(len(body), status is not None and 200 <= status < 300)
        return response

    def _settle_success(self, batch: Batch, start: int, end: int, body: bytes) -> bool:
        """Settle a part the server accepted; False when some of it was rejected one by one."""
        rejected = _rejected_indexes(body, end - start)
        if not self._buffer.settle(batch, start, end, None, len(rejected)):
            return not rejected
        if rejected:
            items = batch.messages(start, end)
            bad = [items[index] for index in sorted(rejected)]
            error = DeliveryError(
                DropReason.REJECTED, "the server rejected these messages one by one", 200
            )
            self._reporter.dropped(error, bad, len(bad))
            if self._reporter.wants_success:
                self._reporter.delivered(
                    item for index, item in enumerate(items) if index not in rejected
                )
        elif self._reporter.wants_success:
            self._reporter.delivered(batch.messages(start, end))
        return not rejected

    def _drop(
        self,
        batch: Batch,
        start: int,
        end: int,
        reason: DropReason,
        response: Response | None,
        detail: str,
    ) -> None:
        if self._buffer.settle(batch, start, end, reason):
            status = response.status if response is not None else None
            error = DeliveryError(reason, _with_body(detail, response), status)
            self._reporter.dropped(error, batch.messages(start, end), end - start)

    def _give_up(
        self,
        batch: Batch,
        parts: collections.deque[tuple[int, int]],
        reason: DropReason,
        response: Response | None,
        detail: str,
    ) -> None:
        """The attempt ran out (`reason`): requeue the open parts when the buffer can keep
        them, else drop them."""
        if not self._buffer.can_requeue:
            while parts:
                start, end = parts.popleft()
                self._drop(batch, start, end, reason, response, detail)
            return
        kept = 0
        while parts:
            start, end = parts.popleft()
            if self._buffer.requeue(batch, start, end):
                kept += end - start
        if kept:
            self._reporter.warn(
                "requeue",
                "could not deliver %d message(s) now (%s); they wait for a try in %gs",
                kept,
                detail,
                self._requeue_pause,
            )


def _describe(response: Response) -> str:
    if response.status is None:
        return response.error or "no answer"
    return f"HTTP {response.status}"


def _with_body(detail: str, response: Response | None) -> str:
    if response is None or not response.body:
        return detail
    text = response.body[:200].decode("utf-8", "replace")
    return f"{detail}: {text}"


def _rejected_indexes(body: bytes, count: int) -> set[int]:
    """Indexes a 200 answer lists as rejected (`{"rejected": [{"index": i, ...}]}`), if any."""
    if b"rejected" not in body:
        return set()
    try:
        document = loads(body)
    except ValueError:
        return set()
    rejected = document.get("rejected") if isinstance(document, dict) else None
    if not isinstance(rejected, list):
        return set()
    indexes: set[int] = set()
    for entry in rejected:
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
            indexes.add(index)
    return indexes
