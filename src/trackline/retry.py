"""The retry policy as a value: what an answer means, and how long to wait before trying again.

Pure functions of their inputs (the random source and the clock are passed in), so every rule
has a millisecond test. The rules:

- retry connection errors, timeouts, 408, 429 and 5xx (500 too: servers dedupe on messageId,
  so a resend after a lost answer costs nothing);
- never retry 400, 401, 403, 404, 422 or any other 4xx: the same bytes will fail the same way;
- 413 means the batch is too large: split it in halves, drop only a message that is alone too
  large;
- wait with exponential backoff and full jitter, `uniform(0, min(cap, base * 2**attempt))`,
  unless the server said how long with `Retry-After` (seconds or an HTTP date), which wins and
  is honoured exactly (capped at ten minutes);
- stop after `max_retries` retries, or as soon as the next attempt could not start before the
  delivery deadline.
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import math
import random
from typing import Final

from trackline.config import default
from trackline.stats import DropReason

RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
UNAUTHORIZED_STATUSES: Final = frozenset({401, 403})
#: Longest Retry-After honoured; a larger value is taken as this.
MAX_RETRY_AFTER: Final = 600.0


class Action(enum.Enum):
    """What to do with a batch after one attempt."""

    DONE = "done"
    RETRY = "retry"
    SPLIT = "split"
    DROP = "drop"


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one answer: the action, and the drop reason when it drops."""

    action: Action
    reason: DropReason | None = None


def classify(status: int | None) -> Verdict:
    """Decide from an HTTP status (None: no answer, the connection failed or timed out)."""
    if status is None or status in RETRYABLE_STATUSES or 500 <= status < 600:
        return Verdict(Action.RETRY)
    if 200 <= status < 300:
        return Verdict(Action.DONE)
    if status == 413:
        return Verdict(Action.SPLIT)
    if status in UNAUTHORIZED_STATUSES:
        return Verdict(Action.DROP, DropReason.UNAUTHORIZED)
    return Verdict(Action.DROP, DropReason.REJECTED)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None.

    Junk, negative values and dates in the past give None or zero; the result is capped.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_epoch
    if not math.isfinite(seconds) or seconds < 0:
        return 0.0 if seconds < 0 else None
    return min(seconds, MAX_RETRY_AFTER)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to retry; immutable, shared by every worker."""

    max_retries: int = default("max_retries")
    backoff_base: float = default("backoff_base")
    backoff_cap: float = default("backoff_cap")

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Full-jitter backoff before retry `retry_number` (0 for the first retry)."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(retry_number, 62))
        return rng.uniform(0.0, ceiling)

    def next_delay(
        self,
        retries_done: int,
        retry_after: float | None,
        remaining: float,
        rng: random.Random,
    ) -> tuple[float | None, DropReason | None]:
        """The wait before the next retry, or None and the reason to give up.

        `remaining` is what is left of the delivery deadline; a wait that would end past it
        gives up now instead of sleeping for nothing.
        """
        if retries_done >= self.max_retries:
            return None, DropReason.RETRIES_EXHAUSTED
        delay = retry_after if retry_after is not None else self.backoff(retries_done, rng)
        if delay >= remaining:
            return None, DropReason.DELIVERY_TIMEOUT
        return delay, None
