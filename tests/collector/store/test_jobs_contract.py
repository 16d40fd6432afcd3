"""The delivery jobs every store engine keeps (the rules in `trackline.collector.store.jobs`):
written with their events, claimed under leases in per-user order, settled once by their
holder, counted by state, shown per event, replayed. Runs once per engine in `ENGINES`."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.collector.store.conftest import RECEIVED, Engine, rows
from trackline.collector.store import (
    EventDelivery,
    Job,
    JobStatus,
    Outcome,
    Settlement,
    Store,
    WriteResult,
)

LEASE = 60.0


def counts(store: Store, name: str) -> tuple[int, int, int, int]:
    """(pending, retrying, delivered, failed) of one destination, zeros when unknown."""
    for found in store.destination_counts():
        if found.name == name:
            return found.pending, found.retrying, found.delivered, found.failed
    return 0, 0, 0, 0


def ids(jobs: list[Job]) -> list[str]:
    return [job.message_id for job in jobs]


def settle(store: Store, jobs: list[Job], outcome: Outcome, **fields: object) -> int:
    return store.settle([Settlement(job, outcome, **fields) for job in jobs])  # type: ignore[arg-type]


def test_a_stored_event_gets_one_job_per_destination_its_route_names(store: Store) -> None:
    """Jobs are written with the events: one per destination named, none for `()`."""
    result = store.write(rows(1, 2, 3), routes=[("Hook", "Files"), ("Hook",), ()])
    assert result == WriteResult(3, 0)
    assert counts(store, "Hook") == (2, 0, 0, 0)
    assert counts(store, "Files") == (1, 0, 0, 0)
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-1", "message-2"]
    assert ids(store.claim("Files", 10, LEASE)) == ["message-1"]


def test_a_duplicate_queues_nothing_again(store: Store) -> None:
    """A messageId stored before is not queued again, in a later write or the same one."""
    store.write(rows(1), routes=[("Hook",)])
    assert store.write(rows(1, 2, 2), routes=[("Hook",)] * 3) == WriteResult(1, 2)
    assert counts(store, "Hook") == (2, 0, 0, 0)
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-1", "message-2"]


def test_an_unroutable_event_is_stored_and_counted(store: Store) -> None:
    """A route of None (malformed integrations) stores the event, queues nothing, and counts
    it once, not again for its duplicates."""
    store.write(rows(1, 2), routes=[None, ("Hook",)])
    store.write(rows(1), routes=[None])
    assert store.stats().unroutable == 1
    assert store.stats().events == 2
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-2"]


def test_writes_without_routes_queue_nothing(store: Store) -> None:
    store.write(rows(1, 2))
    assert store.destination_counts() == []
    assert store.claim("Hook", 10, LEASE) == []


def test_a_claimed_job_carries_its_event(store: Store) -> None:
    """A job has its event's messageId and stored JSON, no attempts yet, and ids that grow
    in stored order."""
    store.write(rows(1, 2, user="u"), routes=[("Hook",)] * 2)
    first, second = store.claim("Hook", 10, LEASE)
    assert first.destination == "Hook"
    assert '"messageId":"message-1"' in first.body
    assert (first.attempts, first.first_attempt_at) == (0, None)
    assert first.id < second.id
    assert first.order_key == second.order_key != 0


def test_claims_respect_the_limit_and_never_hand_out_a_held_job(store: Store) -> None:
    store.write(rows(1, 2, 3), routes=[("Hook",)] * 3)
    assert ids(store.claim("Hook", 2, LEASE)) == ["message-1", "message-2"]
    assert ids(store.claim("Hook", 2, LEASE)) == ["message-3"]
    assert store.claim("Hook", 2, LEASE) == []


def test_a_lease_that_runs_out_gives_the_job_back(store: Store) -> None:
    """A claim not settled within its lease (its holder died) is claimable again; the old
    holder's late settlement then changes nothing."""
    store.write(rows(1), routes=[("Hook",)])
    (stale,) = store.claim("Hook", 1, 0.05)
    time.sleep(0.2)
    (fresh,) = store.claim("Hook", 1, LEASE)
    assert fresh.message_id == stale.message_id
    assert fresh.claim != stale.claim
    assert settle(store, [stale], Outcome.DELIVERED) == 0
    assert counts(store, "Hook") == (1, 0, 0, 0)
    assert settle(store, [fresh], Outcome.DELIVERED) == 1
    assert counts(store, "Hook") == (0, 0, 1, 0)


def test_a_job_is_settled_once(store: Store) -> None:
    """A second settlement from the same claim finds the job gone and changes nothing."""
    store.write(rows(1), routes=[("Hook",)])
    jobs = store.claim("Hook", 1, LEASE)
    assert settle(store, jobs, Outcome.DELIVERED) == 1
    assert settle(store, jobs, Outcome.FAILED, error="late") == 0
    assert counts(store, "Hook") == (0, 0, 1, 0)


def test_delivered_jobs_are_counted_and_shown_per_event(store: Store) -> None:
    store.write(rows(1, 2), routes=[("Hook", "Files")] * 2)
    jobs = store.claim("Hook", 10, LEASE)
    assert settle(store, jobs, Outcome.DELIVERED) == 2
    assert counts(store, "Hook") == (0, 0, 2, 0)
    assert store.claim("Hook", 10, LEASE) == []
    (hook_counts,) = [c for c in store.destination_counts() if c.name == "Hook"]
    assert hook_counts.last_success_at is not None
    deliveries = store.deliveries("message-1")
    assert deliveries is not None
    assert [(d.destination, d.status, d.attempts) for d in deliveries] == [
        ("Files", JobStatus.PENDING, 0),
        ("Hook", JobStatus.DELIVERED, 1),
    ]
    assert deliveries[0].delivered_at is None
    assert deliveries[1].delivered_at is not None


def test_deliveries_of_an_unknown_event_is_none_and_of_an_unrouted_one_empty(
    store: Store,
) -> None:
    store.write(rows(1), routes=[()])
    assert store.deliveries("message-1") == []
    assert store.deliveries("no-such-message") is None


def test_a_retry_waits_for_its_time_and_keeps_its_attempts(store: Store) -> None:
    """RETRY counts an attempt, records the error and the first attempt's time, and hides
    the job until `retry_at`."""
    store.write(rows(1), routes=[("Hook",)])
    jobs = store.claim("Hook", 1, LEASE)
    later = time.time() + 3600
    assert settle(store, jobs, Outcome.RETRY, error="HTTP 503", retry_at=later) == 1
    assert counts(store, "Hook") == (0, 1, 0, 0)
    assert store.claim("Hook", 1, LEASE) == []
    assert store.deliveries("message-1") == [
        EventDelivery("Hook", JobStatus.RETRYING, 1, "HTTP 503", None)
    ]
    (counted,) = store.destination_counts()
    assert counted.last_error == "HTTP 503"
    assert counted.last_error_at is not None


def test_a_due_retry_is_claimed_again_with_its_history(store: Store) -> None:
    store.write(rows(1), routes=[("Hook",)])
    jobs = store.claim("Hook", 1, LEASE)
    settle(store, jobs, Outcome.RETRY, error="HTTP 500", retry_at=time.time() - 1)
    (again,) = store.claim("Hook", 1, LEASE)
    assert again.attempts == 1
    assert again.first_attempt_at is not None
    settle(store, [again], Outcome.RETRY, error="HTTP 502", retry_at=time.time() - 1)
    (third,) = store.claim("Hook", 1, LEASE)
    assert third.attempts == 2
    assert third.first_attempt_at == again.first_attempt_at
    settle(store, [third], Outcome.DELIVERED)
    assert counts(store, "Hook") == (0, 0, 1, 0)
    (delivery,) = store.deliveries("message-1") or []
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        JobStatus.DELIVERED,
        3,
        None,
    )


def test_a_released_job_counts_no_attempt(store: Store) -> None:
    """RELEASED puts the job back untouched: claimable again at once (or at `retry_at`)."""
    store.write(rows(1, 2), routes=[("Hook",)] * 2)
    first, second = store.claim("Hook", 2, LEASE)
    settle(store, [first], Outcome.RELEASED)
    settle(store, [second], Outcome.RELEASED, retry_at=time.time() + 3600)
    assert counts(store, "Hook") == (2, 0, 0, 0)
    (again,) = store.claim("Hook", 2, LEASE)
    assert (again.message_id, again.attempts) == ("message-1", 0)


def test_one_users_later_event_waits_while_an_earlier_one_is_held(store: Store) -> None:
    """Per destination, a user's events go out in stored order: while a user's earlier job
    is held by a claim, that user's later jobs are skipped; other users go on."""
    store.write(
        rows(1, user="alice") + rows(2, user="bob") + rows(3, user="alice"),
        routes=[("Hook",)] * 3,
    )
    assert ids(store.claim("Hook", 1, LEASE)) == ["message-1"]
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-2"]


def test_a_users_events_may_go_out_together_in_one_claim(store: Store) -> None:
    store.write(rows(1, 2, 3, user="alice"), routes=[("Hook",)] * 3)
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-1", "message-2", "message-3"]


def test_a_retrying_event_holds_back_that_users_later_events_only(store: Store) -> None:
    store.write(
        rows(1, user="alice") + rows(2, user="bob") + rows(3, user="alice"),
        routes=[("Hook",)] * 3,
    )
    first = store.claim("Hook", 1, LEASE)
    settle(store, first, Outcome.RETRY, error="HTTP 500", retry_at=time.time() + 3600)
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-2"]


def test_a_users_later_event_goes_once_the_earlier_one_ended(store: Store) -> None:
    store.write(rows(1, 2, user="alice"), routes=[("Hook",)] * 2)
    first = store.claim("Hook", 1, LEASE)
    assert store.claim("Hook", 10, LEASE) == []
    settle(store, first, Outcome.FAILED, error="HTTP 400")
    assert ids(store.claim("Hook", 10, LEASE)) == ["message-2"]


def test_destinations_do_not_block_each_other(store: Store) -> None:
    """One destination's held and retrying jobs do not hold back another's."""
    store.write(rows(1, 2, user="alice"), routes=[("Hook", "Files")] * 2)
    hook = store.claim("Hook", 1, LEASE)
    settle(store, hook, Outcome.RETRY, error="down", retry_at=time.time() + 3600)
    assert ids(store.claim("Files", 10, LEASE)) == ["message-1", "message-2"]


def test_a_failed_job_is_a_dead_letter_with_its_attempts_and_error(store: Store) -> None:
    store.write(rows(1), routes=[("Hook",)])
    jobs = store.claim("Hook", 1, LEASE)
    settle(store, jobs, Outcome.RETRY, error="HTTP 500", retry_at=time.time() - 1)
    jobs = store.claim("Hook", 1, LEASE)
    settle(store, jobs, Outcome.FAILED, error="HTTP 400: bad")
    assert counts(store, "Hook") == (0, 0, 0, 1)
    assert store.claim("Hook", 1, LEASE) == []
    assert store.deliveries("message-1") == [
        EventDelivery("Hook", JobStatus.FAILED, 2, "HTTP 400: bad", None)
    ]


def test_replaying_dead_letters_queues_them_afresh(store: Store) -> None:
    """`replay(failed_only=True)` moves a destination's dead letters back to the queue with
    their attempts reset; delivered events stay delivered."""
    store.write(rows(1, 2), routes=[("Hook",)] * 2)
    first, second = store.claim("Hook", 2, LEASE)
    settle(store, [first], Outcome.FAILED, error="HTTP 400")
    settle(store, [second], Outcome.DELIVERED)
    assert store.replay("Hook", failed_only=True) == 1
    assert counts(store, "Hook") == (1, 0, 1, 0)
    (again,) = store.claim("Hook", 10, LEASE)
    assert (again.message_id, again.attempts) == ("message-1", 0)
    settle(store, [again], Outcome.DELIVERED)
    assert counts(store, "Hook") == (0, 0, 2, 0)
    assert store.replay("Hook", failed_only=True) == 0


def test_replay_backfills_a_new_destination_from_history(store: Store) -> None:
    """Without `failed_only`, every stored event `selects` approves gets a job, unless one is
    queued already; `since` keeps the recent ones."""
    old = RECEIVED - timedelta(hours=3)
    store.write(rows(1, received_at=old) + rows(2, 3, 4))
    assert store.replay("Files", selects=lambda body: '"message-3"' not in body) == 3
    assert ids(store.claim("Files", 10, LEASE)) == ["message-1", "message-2", "message-4"]
    assert store.replay("Files") == 1  # message-3; the others are queued already
    since = (RECEIVED - timedelta(hours=1)).isoformat(timespec="milliseconds")[:-6] + "Z"
    assert store.replay("Hook", since=since) == 3
    assert counts(store, "Hook") == (3, 0, 0, 0)


def test_replay_resends_a_delivered_event(store: Store) -> None:
    store.write(rows(1), routes=[("Hook",)])
    settle(store, store.claim("Hook", 1, LEASE), Outcome.DELIVERED)
    assert store.replay("Hook") == 1
    deliveries = store.deliveries("message-1")
    assert deliveries is not None
    assert deliveries[0].status is JobStatus.PENDING
    settle(store, store.claim("Hook", 1, LEASE), Outcome.DELIVERED)
    assert counts(store, "Hook") == (0, 0, 2, 0)


def test_clear_forgets_jobs_and_counts(store: Store) -> None:
    store.write(rows(1, 2), routes=[("Hook",)] * 2)
    held = store.claim("Hook", 1, LEASE)
    store.clear()
    assert counts(store, "Hook") == (0, 0, 0, 0)
    assert store.claim("Hook", 10, LEASE) == []
    assert settle(store, held, Outcome.DELIVERED) == 0


def test_jobs_and_their_states_survive_a_restart(engine: Engine) -> None:
    """Queued, retrying, delivered and failed jobs are all still there after reopening; a
    claim held by the closed store is claimable again at once (SQLite) or after its lease."""
    store = engine.open()
    store.write(rows(1, 2, 3, 4), routes=[("Hook",)] * 4)
    a, b, c = store.claim("Hook", 3, 0.2)
    settle(store, [a], Outcome.DELIVERED)
    settle(store, [b], Outcome.FAILED, error="HTTP 400")
    settle(store, [c], Outcome.RETRY, error="HTTP 500", retry_at=time.time() - 1)
    store.claim("Hook", 1, 0.2)  # message-3's retry, held when the store closes
    store.close()
    time.sleep(0.3)
    reopened = engine.open()
    assert counts(reopened, "Hook") == (1, 1, 1, 1)
    assert ids(reopened.claim("Hook", 10, LEASE)) == ["message-3", "message-4"]


def test_settling_many_jobs_at_once(store: Store) -> None:
    """Large writes and settlements go through whole (the engines cut statements)."""
    count = 7000
    store.write(rows(*range(count)), routes=[("Hook",)] * count)
    claimed = store.claim("Hook", count, LEASE)
    assert len(claimed) == count
    assert settle(store, claimed, Outcome.DELIVERED) == count
    assert counts(store, "Hook") == (0, 0, count, 0)


@pytest.mark.parametrize("outcome", [Outcome.DELIVERED, Outcome.FAILED])
def test_a_job_ended_is_never_claimed_again(store: Store, outcome: Outcome) -> None:
    store.write(rows(1), routes=[("Hook",)])
    settle(store, store.claim("Hook", 1, LEASE), outcome, error="x")
    assert store.claim("Hook", 1, LEASE) == []


def test_an_error_holding_a_nul_is_kept_with_a_replacement_character(store: Store) -> None:
    """A destination's answer may hold a NUL, which PostgreSQL text cannot: its error is kept
    on every store with U+FFFD in its place, and the settlement goes through."""
    store.write(rows(1), routes=[("Hook",)])
    jobs = store.claim("Hook", 1, LEASE)
    later = time.time() + 3600
    assert settle(store, jobs, Outcome.RETRY, error="HTTP 500: a\x00b", retry_at=later) == 1
    assert store.deliveries("message-1") == [
        EventDelivery("Hook", JobStatus.RETRYING, 1, "HTTP 500: a\ufffdb", None)
    ]
    (counted,) = store.destination_counts()
    assert counted.last_error == "HTTP 500: a\ufffdb"
