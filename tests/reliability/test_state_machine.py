"""The client as a state machine (table B1, c22): Hypothesis drives track / flush / outage /
recover / fail-next-N / shutdown against the real collector through the fault proxy.

After every step: enqueued = delivered + dropped + queued + in flight, the queue within its
bound, flush and shutdown within their deadlines, every drop reported once. At the end of each
run: every message stored once or dropped with a reason, stored in the order it was sent, and
stored-and-dropped only where the answer of a committed batch can have been lost.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import trackline
from tests.support.faultproxy import BlackHole, DropResponse, FaultProxy, ResetPeer
from tests.support.ledger import CollectorStore, Ledger

MAX_QUEUE = 40
#: A deadline may be overrun by this much: thread wake-ups, not trackline, take the time.
SLACK = 0.15


class DeliveryMachine(RuleBasedStateMachine):
    """One client, one ledger per run; the collector and the proxy are shared by all runs."""

    def __init__(self, proxy: FaultProxy, store: CollectorStore) -> None:
        super().__init__()
        self.proxy = proxy
        self.store = store
        proxy.clear()
        if proxy.is_down:
            proxy.up()
        self.ledger = Ledger("state machine")
        self.client = trackline.Client(
            "machine-key",
            host=proxy.url,
            workers=1,  # the machine checks arrival order, which one worker keeps
            on_error=self.ledger.on_error,
            max_queue_size=MAX_QUEUE,
            flush_at=10,
            flush_interval=0.05,
            backoff_base=0.01,
            backoff_cap=0.05,
            timeout=0.3,
            delivery_timeout=1.5,
        )
        self.closed = False

    @rule(count=st.integers(min_value=1, max_value=25))
    def track(self, count: int) -> None:
        for _ in range(count):
            started = time.monotonic()
            self.ledger.track(self.client)
            # A call that waited on the network would take the request timeout (0.3 s).
            assert time.monotonic() - started < 0.25, "a call waited"

    @rule(timeout=st.sampled_from([0.0, 0.05, 0.3]))
    def flush(self, timeout: float) -> None:
        started = time.monotonic()
        self.client.flush(timeout)
        assert time.monotonic() - started <= timeout + SLACK

    @precondition(lambda self: not self.proxy.is_down)
    @rule()
    def outage(self) -> None:
        self.proxy.down()

    @rule()
    def recover(self) -> None:
        self.proxy.clear()
        if self.proxy.is_down:
            self.proxy.up()

    @rule(
        count=st.integers(min_value=1, max_value=3),
        fault=st.sampled_from([ResetPeer, DropResponse, BlackHole]),
    )
    def fail_next(self, count: int, fault: type[Any]) -> None:
        self.proxy.add(fault(times=count))

    @precondition(lambda self: not self.closed)
    @rule(timeout=st.sampled_from([0.0, 0.1, 0.5]))
    def shutdown(self, timeout: float) -> None:
        started = time.monotonic()
        self.client.shutdown(timeout)
        assert time.monotonic() - started <= timeout + SLACK
        self.closed = True

    @invariant()
    def accounted(self) -> None:
        stats = self.client.stats
        assert stats.unaccounted == 0, stats
        assert stats.queued <= MAX_QUEUE, stats
        assert stats.enqueued == len(self.ledger.sent), stats
        assert set(self.ledger.drops) <= set(self.ledger.sent)

    def teardown(self) -> None:
        self.recover()
        self.client.shutdown(5.0)
        sent = self.ledger.sent
        position = {message_id: index for index, message_id in enumerate(sent)}
        rows = [row for row in self.store.stored_ids() if row in position]
        account = self.ledger.settle(self.client, rows)
        account.assert_exact(stored_and_dropped_allowed=True)
        order = [position[row] for row in rows]
        assert order == sorted(order), "stored out of the order sent"


QUICK = settings(
    max_examples=12,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
THOROUGH = settings(
    max_examples=1000,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_c22_accounting_holds_after_every_step(proxy: FaultProxy, store: CollectorStore) -> None:
    """A dozen random runs of a dozen steps (a few seconds)."""
    run_state_machine_as_test(lambda: DeliveryMachine(proxy, store), settings=QUICK)


@pytest.mark.slow
def test_c22_accounting_holds_after_every_step_thorough(
    proxy: FaultProxy, store: CollectorStore
) -> None:
    """A thousand runs of up to 40 steps (a minute or two)."""
    run_state_machine_as_test(lambda: DeliveryMachine(proxy, store), settings=THOROUGH)
