"""The retry policy, rule by rule, with a seeded random source and no sleeping."""

from __future__ import annotations

import email.utils
import random

import pytest

from trackline.retry import Action, RetryPolicy, classify, parse_retry_after
from trackline.stats import DropReason


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504, 599])
def test_retryable_answers_are_retried(status: int | None) -> None:
    """Connection failures, timeouts, 408, 429 and every 5xx are retried."""
    assert classify(status).action is Action.RETRY


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_client_errors_are_dropped_as_rejected(status: int) -> None:
    """A 4xx other than 401/403/408/413/429 will fail the same way again: drop, no retry."""
    verdict = classify(status)
    assert verdict.action is Action.DROP
    assert verdict.reason is DropReason.REJECTED


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_dropped_as_unauthorized(status: int) -> None:
    """401 and 403 mean a bad write key: dropped with their own reason."""
    assert classify(status).reason is DropReason.UNAUTHORIZED


def test_413_splits() -> None:
    """A 413 splits the batch instead of dropping it."""
    assert classify(413).action is Action.SPLIT


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_done(status: int) -> None:
    """Any 2xx settles the batch."""
    assert classify(status).action is Action.DONE


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """Retry n waits uniform(0, min(cap, base * 2**n))."""
    policy = RetryPolicy(max_retries=10, backoff_base=0.5, backoff_cap=30.0)
    rng = random.Random(7)
    for retry in range(12):
        ceiling = min(30.0, 0.5 * 2**retry)
        samples = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= sample <= ceiling for sample in samples)
        assert max(samples) > ceiling * 0.8, "jitter should reach near the ceiling"
        assert min(samples) < ceiling * 0.2, "full jitter starts near zero"


def test_backoff_does_not_overflow_for_huge_retry_numbers() -> None:
    """A very large retry number stays at the cap instead of overflowing."""
    assert RetryPolicy().backoff(10_000, random.Random(1)) <= 30.0


def test_retry_after_wins_over_backoff() -> None:
    """A server's Retry-After is the wait, exactly."""
    delay, reason = RetryPolicy().next_delay(0, 3.0, 100.0, random.Random(1))
    assert (delay, reason) == (3.0, None)


def test_gives_up_after_max_retries() -> None:
    """After max_retries retries the batch is dropped as retries_exhausted."""
    delay, reason = RetryPolicy(max_retries=2).next_delay(2, None, 100.0, random.Random(1))
    assert delay is None
    assert reason is DropReason.RETRIES_EXHAUSTED


def test_gives_up_when_the_wait_would_pass_the_deadline() -> None:
    """A wait that ends after the delivery deadline gives up now, as delivery_timeout."""
    delay, reason = RetryPolicy().next_delay(0, 5.0, 4.0, random.Random(1))
    assert delay is None
    assert reason is DropReason.DELIVERY_TIMEOUT


def test_zero_max_retries_never_retries() -> None:
    """max_retries=0 means one attempt only."""
    assert RetryPolicy(max_retries=0).next_delay(0, None, 100.0, random.Random(1))[0] is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 2.5 ", 2.5),
        ("-1", 0.0),
        ("99999", 600.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """Delta-seconds are read as given, negatives as zero, junk ignored, huge values capped."""
    assert parse_retry_after(header, 1_000_000.0) == expected


def test_retry_after_http_date() -> None:
    """An HTTP date is converted to the seconds left until it."""
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(7.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    """A date already past means retry now."""
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
