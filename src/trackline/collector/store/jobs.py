"""Delivery jobs as values: what a store hands a destination's router and takes back.

A job is one stored event owed to one destination. It is written in the transaction that
stores its event (`Store.submit(rows, routes=...)`), handed out by `Store.claim` under a lease,
and ended by `Store.settle`: delivered, failed (the dead letter, kept with its attempts and last
error), or put back to be tried again. Every engine implements the same rules, written down
here and checked by the contract tests in `tests/collector/store/test_jobs_contract.py`:

- only events stored now get jobs: a duplicate messageId queues nothing again;
- a claim hands out due jobs of one destination in stored order, never one that another claim
  holds (until its lease runs out), and never one of a user (`order_key`) whose earlier job is
  held or waiting to be retried: per destination, one user's events go out in stored order;
- `settle` ignores a job whose claim is no longer the holder (its lease ran out and someone
  else claimed it), so a late answer never overwrites a newer one;
- a job is in exactly one state at a time: pending, retrying, delivered or failed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Sequence
from typing import Final, NamedTuple

#: The destinations one stored event is queued for, by name; () routes it nowhere.
Route = tuple[str, ...]
#: One route per row of a write; None where `integrations` was malformed: routed nowhere and
#: counted (`Stats.unroutable`).
Routes = Sequence[Route | None]


#: Longest error text kept per job.
MAX_ERROR_CHARS: Final = 500


def error_text(error: str | None) -> str | None:
    """A settlement's error as the stores keep it: cut to `MAX_ERROR_CHARS`, a NUL (which a
    destination's answer may hold and PostgreSQL text cannot) as U+FFFD, alike on every store."""
    return None if error is None else error[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")


def order_key(user_id: str | None, anonymous_id: str | None) -> int:
    """The key one user's events are kept in order by: a stable 63-bit hash of the user id,
    else of the anonymous id (0 for neither). Stable across processes and restarts; two users
    sharing a key only wait for each other's retries, nothing worse."""
    who = user_id or anonymous_id
    if not who:
        return 0
    digest = hashlib.blake2b(who.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class JobStatus(enum.StrEnum):
    """Where a job is; `pending` and `retrying` jobs are still queued."""

    PENDING = "pending"
    """Queued, not attempted yet (or put back without an attempt)."""
    RETRYING = "retrying"
    """Attempted and failed at least once; tried again after its backoff."""
    DELIVERED = "delivered"
    """The destination took it."""
    FAILED = "failed"
    """The dead letter: refused for good, or out of attempts; kept until replayed."""


class Outcome(enum.StrEnum):
    """How a claimed job ends its claim."""

    DELIVERED = "delivered"
    """Delivered: one more attempt, the job is done."""
    RETRY = "retry"
    """One more failed attempt: claimable again from `retry_at`."""
    FAILED = "failed"
    """One more failed attempt, and the last: the job becomes a dead letter."""
    RELEASED = "released"
    """No attempt was made (the destination is down, the router stops): claimable again from
    `retry_at` (or at once), attempts unchanged."""


class Job(NamedTuple):
    """One event owed to one destination, as a claim hands it out. (A tuple, like
    `Settlement`: routers make thousands a second, and a frozen dataclass costs several times
    as much to build.)"""

    destination: str
    #: Unique within the destination, increasing in the order events were stored.
    id: int
    message_id: str
    #: The stored message, JSON text.
    body: str
    #: See `order_key()`: jobs with the same key go out in `id` order.
    order_key: int
    #: Attempts counted before this claim.
    attempts: int
    #: Epoch seconds of the first counted attempt, None before it.
    first_attempt_at: float | None
    #: The claim that handed it out; `settle` only takes the current holder's word.
    claim: int


class Settlement(NamedTuple):
    """The end of one job's claim: its outcome, the error of a failed attempt, and for
    `RETRY` and `RELEASED` the epoch second from which it may be claimed again."""

    job: Job
    outcome: Outcome
    error: str | None = None
    retry_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DestinationCounts:
    """One destination's jobs by state, its last error and its last success (ISO 8601)."""

    name: str
    pending: int
    retrying: int
    delivered: int
    failed: int
    last_error: str | None
    last_error_at: str | None
    last_success_at: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class EventDelivery:
    """Where one event stands with one destination."""

    destination: str
    status: JobStatus
    attempts: int
    last_error: str | None
    #: ISO 8601 when delivered, else None.
    delivered_at: str | None
