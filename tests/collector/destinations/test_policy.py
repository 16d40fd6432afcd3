"""The retry rules for one job (`decide`) and for a destination (`Health`), with a fixed
random source and a fake clock: one short test per rule."""

from __future__ import annotations

import random

from trackline.collector.destinations.policy import DOWN_AFTER, Health, JobPolicy, decide
from trackline.collector.destinations.sender import (
    DELIVERED,
    HELD,
    Result,
    Verdict,
    retrying,
    unanswered,
)
from trackline.collector.store import Job, Outcome

POLICY = JobPolicy(
    retry_window=3600.0, min_attempts=3, max_attempts=0, backoff_base=1.0, backoff_cap=60.0
)
NOW = 1_800_000_000.0
FAILED_500 = Result(Verdict.RETRY, "HTTP 500")


def job(attempts: int = 0, first_attempt_at: float | None = None) -> Job:
    return Job("Hook", 1, "m-1", "{}", 7, attempts, first_attempt_at, claim=1)


def test_delivered_and_refused_end_the_job() -> None:
    rng = random.Random(1)
    assert decide(job(), DELIVERED, POLICY, NOW, rng).outcome is Outcome.DELIVERED
    refused = decide(job(), Result(Verdict.FAILED, "HTTP 400"), POLICY, NOW, rng)
    assert (refused.outcome, refused.error) == (Outcome.FAILED, "HTTP 400")


def test_a_retry_waits_a_full_jitter_backoff_within_the_cap() -> None:
    rng = random.Random(2)
    for attempts in range(12):
        settled = decide(job(attempts, NOW - 10), FAILED_500, POLICY, NOW, rng)
        assert settled.outcome is Outcome.RETRY
        assert settled.retry_at is not None
        assert 0 <= settled.retry_at - NOW <= min(60.0, 2.0**attempts)


def test_retry_after_is_waited_exactly() -> None:
    asked = Result(Verdict.RETRY, "HTTP 429", retry_after=42.0)
    settled = decide(job(), asked, POLICY, NOW, random.Random(3))
    assert settled.retry_at == NOW + 42.0


def test_the_window_fails_a_job_only_after_the_minimum_attempts() -> None:
    rng = random.Random(4)
    old = NOW - 7200.0
    assert decide(job(1, old), FAILED_500, POLICY, NOW, rng).outcome is Outcome.RETRY
    failed = decide(job(2, old), FAILED_500, POLICY, NOW, rng)
    assert failed.outcome is Outcome.FAILED
    assert failed.error == "HTTP 500 (attempt 3, retry window over)"


def test_within_the_window_a_job_keeps_retrying() -> None:
    settled = decide(job(50, NOW - 60), FAILED_500, POLICY, NOW, random.Random(5))
    assert settled.outcome is Outcome.RETRY


def test_max_attempts_ends_a_job_inside_the_window() -> None:
    capped = JobPolicy(3600.0, 1, 3, 1.0, 60.0)
    rng = random.Random(6)
    assert decide(job(1, NOW), FAILED_500, capped, NOW, rng).outcome is Outcome.RETRY
    assert decide(job(2, NOW), FAILED_500, capped, NOW, rng).outcome is Outcome.FAILED


def test_an_uncounted_failure_releases_the_job() -> None:
    settled = decide(
        job(2, NOW), unanswered("refused"), POLICY, NOW, random.Random(7), counts=False
    )
    assert settled.outcome is Outcome.RELEASED


def test_a_job_held_back_unsent_goes_back_with_no_attempt() -> None:
    """Held: behind a request to be retried, so never sent; even at its last attempt it is
    released as it was, neither failed nor given a retry time."""
    last = JobPolicy(
        retry_window=3600.0, min_attempts=1, max_attempts=3, backoff_base=1.0, backoff_cap=60.0
    )
    settled = decide(job(2, NOW), HELD, last, NOW, random.Random(7))
    assert (settled.outcome, settled.error, settled.retry_at) == (Outcome.RELEASED, None, None)
    assert retrying([DELIVERED, unanswered("reset"), HELD])
    assert not retrying([DELIVERED, HELD, Result(Verdict.FAILED, "HTTP 400")])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_send_pauses_the_destination_then_one_worker_probes() -> None:
    clock = Clock()
    health = Health(POLICY, random.Random(8), clock)
    assert health.begin()
    assert health.begin()
    health.failed([FAILED_500])
    assert health.failing
    assert not health.down
    clock.now += 61.0  # past any backoff
    assert health.begin()
    assert not health.begin()  # one probe at a time
    health.succeeded()
    assert not health.failing
    assert health.begin()
    assert health.begin()


def test_retry_after_pauses_the_destination_for_as_long() -> None:
    clock = Clock()
    health = Health(POLICY, random.Random(9), clock)
    health.failed([Result(Verdict.RETRY, "HTTP 429", retry_after=30.0)])
    assert health.wait_time() == 30.0
    clock.now += 29.0
    assert not health.begin()
    clock.now += 1.0
    assert health.begin()


def test_sends_without_an_answer_mark_the_destination_down_until_one_answers() -> None:
    clock = Clock()
    health = Health(POLICY, random.Random(10), clock)
    for _ in range(DOWN_AFTER):
        health.failed([unanswered("connection refused")])
    assert health.down
    health.failed([FAILED_500])  # an answer, even an error: it is up
    assert not health.down


def test_the_pacer_holds_routers_back_only_while_ingest_is_busy() -> None:
    """While ingest is busy, a cycle of T seconds holds every router back REST_FACTOR x T
    (each wait at most MAX_REST_SECONDS); when ingest is idle, nothing waits."""
    from trackline.collector.destinations.router import MAX_REST_SECONDS, REST_FACTOR, Pacer

    clock = Clock()
    busy = {"now": True}
    pacer = Pacer(lambda: busy["now"], clock)
    waits: list[float] = []

    class Stop:
        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            clock.now += seconds
            return False

    stop = Stop()
    assert not pacer.wait(stop)  # type: ignore[arg-type]
    pacer.spent(0.1)
    assert pacer.wait(stop)  # type: ignore[arg-type]
    assert waits == [min(0.1 * REST_FACTOR, MAX_REST_SECONDS)]
    pacer.spent(0.1)
    busy["now"] = False
    assert not pacer.wait(stop)  # type: ignore[arg-type]
    pacer.spent(10.0)  # ingest idle: no debt
    busy["now"] = True
    assert pacer.wait(stop)  # type: ignore[arg-type]  # the earlier debt remains
    assert waits[-1] <= MAX_REST_SECONDS
