"""One destination's router: its own worker threads claim jobs from the store, send them in
batches, and settle every job with what happened (claim -> send -> settle).

A router shares nothing with the other destinations' routers but the store, so a slow or dead
destination holds up only its own queue. Its workers never wait on ingest either: ingest only
writes jobs and wakes the router.

Order per user: the store never hands out a user's job while an earlier one of theirs is held
or waiting for a retry; within a claim, the router stops at the first batch that must be
retried and puts the rest of the claim back untouched (no attempt counted), so a later event
can never overtake an earlier one that is being retried. See rudder-server's
router/internal/eventorder for the same barrier.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from trackline.collector.destinations.config import DestinationConfig
from trackline.collector.destinations.policy import Health, JobPolicy, decide
from trackline.collector.destinations.sender import Result, Sender, Verdict, unanswered
from trackline.collector.store import Job, Outcome, Settlement, StorageError, Store

logger = logging.getLogger(__name__)

#: How often an idle router looks for jobs it was not woken for (retries coming due, jobs
#: another process queued).
POLL_SECONDS: Final = 1.0
#: Seconds to wait after the store failed before trying it again.
STORE_RETRY_SECONDS: Final = 1.0
#: Jobs per claim: enough batches to make a claim worth its round trip, at most this many
#: jobs shared by the destination's workers (unless one batch is larger), and at most
#: `CLAIM_BATCHES` batches, so that a claim's lease (which must outlast all its sends) stays
#: minutes, not hours.
CLAIM_JOBS: Final = 1000
CLAIM_BATCHES: Final = 20
#: While ingest is busy, the routers together rest this many times as long as their claims
#: take to deliver: delivery gets about a sixth of the process, ingest (which has clients
#: waiting on it) the rest. One wait is at most `MAX_REST_SECONDS`, so delivery never stops.
REST_FACTOR: Final = 5.0
MAX_REST_SECONDS: Final = 1.0


class RateLimiter:
    """Spaces requests at most `rate` per second (a bucket one request deep), shared by the
    workers of one destination; waits through `wait` so that stopping interrupts it."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Book the next request; returns how long to wait before sending it."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
            return start - now


class Pacer:
    """Paces every router of a collector while ingest is busy (see `REST_FACTOR`).

    The routers share one clock: each delivery cycle moves it forward by its length times
    `REST_FACTOR`, and no router starts a cycle before it. Pacing each router alone would let
    three routers take three times the share, and their threads contend for the one GIL
    that ingest's event loop needs too.
    """

    def __init__(
        self, busy: Callable[[], bool] | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._busy = busy
        self._clock = clock
        self._lock = threading.Lock()
        self._not_before = 0.0

    def wait(self, stop: threading.Event) -> bool:
        """Before a cycle: wait while ingest is busy and the routers had their share; True
        when it waited (the caller looks again: things change while it rests)."""
        if self._busy is None:
            return False
        delay = self._not_before - self._clock()
        if delay <= 0 or not self._busy():
            return False
        stop.wait(min(delay, MAX_REST_SECONDS))
        return True

    def spent(self, seconds: float) -> None:
        """A cycle took `seconds`; while ingest is busy, that pushes the next one back."""
        if self._busy is None or not self._busy():
            return
        with self._lock:
            self._not_before = max(self._not_before, self._clock()) + seconds * REST_FACTOR


class Router:
    """Delivers one destination's jobs with `config.concurrency` threads."""

    def __init__(
        self,
        config: DestinationConfig,
        store: Store,
        make_sender: Callable[[], Sender],
        *,
        lease: float | None = None,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """`pacer`, shared by a collector's routers, makes them yield to a busy ingest."""
        self.config = config
        self._pacer = pacer if pacer is not None else Pacer(None)
        self.name = config.name
        self._store = store
        self._make_sender = make_sender
        self._rng = rng if rng is not None else random.Random()
        self._policy = JobPolicy(
            retry_window=config.retry_window,
            min_attempts=config.min_attempts,
            max_attempts=config.max_attempts,
            backoff_base=config.backoff_base,
            backoff_cap=config.backoff_cap,
        )
        self.health = Health(self._policy, self._rng)
        self._limiter = RateLimiter(config.rate_limit)
        # The workers share CLAIM_JOBS: a claim holds every user it has a job of, and one
        # worker's claim of a thousand jobs could hold every user the queue has, leaving the
        # others nothing to take. Four webhook workers sending batches of 100 to an endpoint
        # answering in 50 ms, a thousand users queued: 1,800 events/s, and 5,300 with shares.
        share = CLAIM_JOBS // config.concurrency
        batches = max(1, min(CLAIM_BATCHES, share // config.batch_size))
        self._claim_size = config.batch_size * batches
        # A claim must outlive its sends, or another worker would take its jobs meanwhile.
        self._lease = lease if lease is not None else batches * (config.timeout + 5.0) * 2 + 60
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Epoch seconds when the earliest job this router put off comes due again.
        self._next_due = float("inf")
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self.config.concurrency):
            thread = threading.Thread(
                target=self._run, name=f"trackline-route-{self.name}-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """New jobs were queued: look now rather than at the next poll."""
        self._wake.set()

    def halt(self) -> None:
        """Tell the workers to stop, without waiting (see `stop`)."""
        self._stop.set()
        self._wake.set()

    def stop(self, deadline: float) -> bool:
        """Stop the workers: a send in progress finishes (within its timeout) and is settled;
        returns False if some worker was still busy at `deadline` (monotonic)."""
        self.halt()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        sender = self._make_sender()
        try:
            while not self._stop.is_set():
                try:
                    self._step(sender)
                except StorageError as exc:
                    logger.warning("destination %s: the store failed: %s", self.name, exc)
                    self._stop.wait(STORE_RETRY_SECONDS)
                except Exception:
                    logger.exception("destination %s: router step failed", self.name)
                    self._stop.wait(STORE_RETRY_SECONDS)
        finally:
            try:
                sender.close()
            except Exception:
                logger.exception("destination %s: closing failed", self.name)

    def _step(self, sender: Sender) -> None:
        if self._pacer.wait(self._stop):
            return
        if not sender.ready():
            self._stop.wait(POLL_SECONDS)
            return
        health = self.health
        if not health.begin():
            self._stop.wait(min(POLL_SECONDS, health.wait_time()) or 0.05)
            return
        probing = health.failing
        try:
            limit = self.config.batch_size if probing else self._claim_size
            self._wake.clear()
            jobs = self._store.claim(self.name, limit, self._lease)
        except BaseException:
            health.end()
            raise
        if not jobs:
            health.end()
            sender.idle()
            now = time.time()
            if self._next_due <= now:  # it came due and someone took it, or it is blocked
                self._next_due = float("inf")
            self._wake.wait(max(0.01, min(POLL_SECONDS, self._next_due - now)))
            return
        started = time.monotonic()
        settlements = self._deliver(sender, jobs, down=health.down)
        self._store.settle(settlements)
        self._pacer.spent(time.monotonic() - started)
        now = time.time()
        later = [s.retry_at for s in settlements if s.retry_at is not None and s.retry_at > now]
        if later:
            self._next_due = min(self._next_due, *later)
        elif self._next_due <= now:
            self._next_due = float("inf")

    def _deliver(self, sender: Sender, jobs: list[Job], *, down: bool) -> list[Settlement]:
        """Send `jobs` batch by batch; the settlement of every one of them."""
        settlements: list[Settlement] = []
        size = self.config.batch_size
        for start in range(0, len(jobs), size):
            if self._stop.is_set():
                settlements += _released(jobs[start:])
                self.health.end()
                break
            batch = jobs[start : start + size]
            wait = self._limiter.delay()
            if wait and self._stop.wait(wait):
                settlements += _released(jobs[start:])
                self.health.end()
                break
            results = self._send(sender, batch)
            now = time.time()
            retry = [r for r in results if r.verdict is Verdict.RETRY]
            # A probe of a destination that is down counts no attempt when it gets no answer.
            counts = not (down and retry and not any(r.answered for r in retry))
            settlements += [
                decide(job, result, self._policy, now, self._rng, counts=counts)
                for job, result in zip(batch, results, strict=True)
            ]
            if retry:
                self.health.failed(retry)
                settlements += _released(jobs[start + size :])
                self._report(retry[0], len(batch), counts)
                break
            self.health.succeeded()
        return settlements

    def _send(self, sender: Sender, batch: Sequence[Job]) -> list[Result]:
        try:
            results = sender.send(batch)
        except Exception as exc:
            logger.exception("destination %s: sending failed unexpectedly", self.name)
            return [unanswered(f"{type(exc).__name__}: {exc}")] * len(batch)
        if len(results) != len(batch):
            logger.error("destination %s: sender returned a wrong number of results", self.name)
            return [unanswered("internal error: wrong number of results")] * len(batch)
        return results

    def _report(self, result: Result, count: int, counted: bool) -> None:
        state = "down, waiting" if self.health.down else "retrying"
        logger.warning(
            "destination %s: %d job(s) not delivered (%s)%s; %s",
            self.name,
            count,
            result.error,
            "" if counted else ", no attempt counted",
            state,
        )


def _released(jobs: Sequence[Job]) -> list[Settlement]:
    return [Settlement(job, Outcome.RELEASED) for job in jobs]
