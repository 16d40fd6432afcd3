"""What every destination kind implements (`Sender`), and the per-job results it returns.

A sender only sends: it never touches the store, never sleeps for a retry and never decides
that a job is dead. It says what happened to each job (`Result`), and the router
(`router.py`) turns that into the job's next state with the policy in `policy.py`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Final, Protocol

import urllib3

from trackline.collector.store import Job
from trackline.retry import RETRYABLE_STATUSES, parse_retry_after


class Verdict(enum.Enum):
    """What one attempt at one job came to."""

    DELIVERED = "delivered"
    RETRY = "retry"
    """Worth trying again: no answer, a timeout, 408, 429, 5xx."""
    FAILED = "failed"
    """Refused for good: trying again would fail the same way (4xx other than 408/429)."""
    HELD = "held"
    """Not sent: an earlier part of the same send must be retried, and a user's later events
    may not overtake it. The job goes back to the queue with no attempt counted."""


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One job's result. `answered` is False when the destination gave no answer at all
    (refused, reset, timed out): several of those in a row mean it is down. `retry_after` is
    how long the destination asked us to wait (seconds), when it said."""

    verdict: Verdict
    error: str | None = None
    answered: bool = True
    retry_after: float | None = None


DELIVERED: Final = Result(Verdict.DELIVERED)
HELD: Final = Result(Verdict.HELD)


def retrying(results: Sequence[Result]) -> bool:
    """Whether some of `results` are to be retried: the rest of a send is then `HELD`."""
    return any(result.verdict is Verdict.RETRY for result in results)


def unanswered(error: str) -> Result:
    """No answer: refused, reset, timed out."""
    return Result(Verdict.RETRY, error, answered=False)


def describe_http_error(exc: urllib3.exceptions.HTTPError) -> str:
    """A short reason for a request that got no answer, for logs and the debugger."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer before the timeout"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "cannot connect: timed out"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"cannot connect: {str(exc).rsplit('] ', 1)[-1].lower()}"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "the connection closed without an answer"
    return f"{type(exc).__name__}: {exc}"


def http_result(
    status: int, body: bytes = b"", retry_after: str | None = None, *, now: float
) -> Result:
    """The result of an HTTP answer: 2xx delivered; 408, 429 and 5xx retried (with the
    answer's Retry-After); any other status failed at once."""
    if 200 <= status < 300:
        return DELIVERED
    text = body[:200].decode("utf-8", "replace").strip()
    error = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return Result(Verdict.RETRY, error, retry_after=parse_retry_after(retry_after, now))
    return Result(Verdict.FAILED, error)


class Sender(Protocol):
    """One destination's way of sending; one instance per router worker thread, so a sender
    needs no locks of its own."""

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        """Send `jobs` (at most the destination's `batch_size`, in stored order); one result
        per job, in the same order. Never raises for a delivery problem."""

    def ready(self) -> bool:
        """Whether this sender may send now; while it may not, its router claims nothing (a
        file destination whose path another process writes)."""

    def idle(self) -> None:
        """The router has nothing to send right now (a chance to rotate a file)."""

    def close(self) -> None:
        """Release connections and files; called once, from the sender's thread."""
