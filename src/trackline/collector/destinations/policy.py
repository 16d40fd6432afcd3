"""The retry rules of a destination, as pure functions and one small state machine.

For a job (`decide`): a result that is worth retrying counts an attempt and waits with
exponential backoff and full jitter (trackline.retry's formula), or exactly what the
destination's Retry-After asked; the job fails (dead letter) once it reached `max_attempts`,
or once `retry_window` has passed since its first attempt and it had at least
`min_attempts`, so a short outage never kills a job that was tried only once.

For the destination (`Health`): every failed send pauses the whole destination for a backoff
of its own, so a struggling destination is not hammered by every due job at once; after a
failure only one batch at a time is sent, as a probe, until one succeeds. Once `DOWN_AFTER`
sends in a row got no answer at all, the destination is down: probes that get no answer
either count no attempt (their jobs are put back untouched), so a queue waits out an outage
of any length instead of burning its attempts and its retry window against a closed port.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import Final

from trackline.collector.destinations.sender import Result, Verdict
from trackline.collector.store import Job, Outcome, Settlement
from trackline.retry import RetryPolicy

#: Sends in a row with no answer after which the destination counts as down.
DOWN_AFTER: Final = 3


@dataclasses.dataclass(frozen=True, slots=True)
class JobPolicy:
    """A destination's retry settings (see `DestinationConfig`)."""

    retry_window: float
    min_attempts: int
    max_attempts: int
    backoff_base: float
    backoff_cap: float

    @property
    def backoff(self) -> RetryPolicy:
        return RetryPolicy(backoff_base=self.backoff_base, backoff_cap=self.backoff_cap)


def decide(
    job: Job,
    result: Result,
    policy: JobPolicy,
    now: float,
    rng: random.Random,
    *,
    counts: bool = True,
) -> Settlement:
    """The settlement for `job` after `result`. With `counts` False (a probe of a destination
    that is down got no answer) a retryable result puts the job back without an attempt."""
    if result.verdict is Verdict.DELIVERED:
        return Settlement(job, Outcome.DELIVERED)
    if result.verdict is Verdict.FAILED:
        return Settlement(job, Outcome.FAILED, result.error)
    if result.verdict is Verdict.HELD:
        return Settlement(job, Outcome.RELEASED)
    if not counts:
        return Settlement(job, Outcome.RELEASED, result.error)
    attempts = job.attempts + 1
    first = now if job.first_attempt_at is None else job.first_attempt_at
    if policy.max_attempts and attempts >= policy.max_attempts:
        return Settlement(job, Outcome.FAILED, f"{result.error} (attempt {attempts}, the last)")
    if now - first >= policy.retry_window and attempts >= policy.min_attempts:
        return Settlement(
            job, Outcome.FAILED, f"{result.error} (attempt {attempts}, retry window over)"
        )
    delay = result.retry_after
    if delay is None:
        delay = policy.backoff.backoff(attempts - 1, rng)
    return Settlement(job, Outcome.RETRY, result.error, retry_at=now + delay)


class Health:
    """Whether a destination is healthy, struggling or down, shared by its worker threads."""

    def __init__(
        self,
        policy: JobPolicy,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy.backoff
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._unanswered = 0
        self._paused_until = 0.0
        self._probing = False

    @property
    def down(self) -> bool:
        """No answer to the last `DOWN_AFTER` sends or more."""
        return self._unanswered >= DOWN_AFTER

    @property
    def failing(self) -> bool:
        """The last send failed: sends go one batch at a time until one succeeds."""
        return self._failures > 0

    def wait_time(self) -> float:
        """Seconds before another send may start (0: now)."""
        return max(0.0, self._paused_until - self._clock())

    def begin(self) -> bool:
        """Take the turn to send; False while paused, or while failing and another worker
        probes (the caller waits and asks again)."""
        with self._lock:
            if self._clock() < self._paused_until:
                return False
            if self._failures:
                if self._probing:
                    return False
                self._probing = True
            return True

    def end(self) -> None:
        """Give the turn back without having sent anything."""
        with self._lock:
            self._probing = False

    def succeeded(self) -> None:
        with self._lock:
            self._failures = self._unanswered = 0
            self._probing = False

    def failed(self, results: list[Result]) -> None:
        """A send with retryable results: pause for the backoff, or what Retry-After asked."""
        with self._lock:
            self._failures += 1
            if any(result.answered for result in results):
                self._unanswered = 0
            else:
                self._unanswered += 1
            pause = self._policy.backoff(self._failures - 1, self._rng)
            asked = [r.retry_after for r in results if r.retry_after is not None]
            if asked:
                pause = max(asked)
            self._paused_until = max(self._paused_until, self._clock() + pause)
            self._probing = False
