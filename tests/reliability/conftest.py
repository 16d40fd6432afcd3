"""Fixtures of the reliability suite: the collector, a fault proxy in front of it (or of the
capture server, where a test scripts the answers), a ledger per test, and a summary of every
test's accounting line at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import trackline
from tests.support.capture import CaptureServer
from tests.support.faultproxy import FaultProxy
from tests.support.ledger import Account, CollectorStore, Ledger
from trackline.collector import RunningCollector, serve

_ACCOUNTS: list[Account] = []

#: Retry quickly: fault tests are about what happens, not how long the default backoff waits.
FAST = {"backoff_base": 0.02, "backoff_cap": 0.1, "flush_interval": 0.05}


@pytest.fixture
def capture_proxy(capture: CaptureServer) -> Iterator[FaultProxy]:
    """A fault proxy on 127.0.0.1 in front of the capture server, for scripted answers."""
    with FaultProxy(capture.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[RunningCollector]:
    """The real collector on 127.0.0.1 with a fresh SQLite file and short deadlines."""
    with serve(
        tmp_path / "events.sqlite3", header_timeout=1.0, body_timeout=2.0, lock_timeout=0.5
    ) as running:
        yield running


@pytest.fixture
def proxy(collector: RunningCollector) -> Iterator[FaultProxy]:
    """A fault proxy on 127.0.0.1 in front of the collector."""
    with FaultProxy(collector.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def store(collector: RunningCollector) -> CollectorStore:
    """The collector's SQLite file, read directly."""
    return CollectorStore(collector.storage.path)


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """The accounting of one test; its settled lines are printed at the end of the run."""
    book = Ledger(request.node.name)
    yield book
    _ACCOUNTS.extend(book.accounts)


@pytest.fixture
def ledger_client(
    make_client: Callable[..., trackline.Client], ledger: Ledger
) -> Callable[..., trackline.Client]:
    """Build a client that reports its drops to the ledger, with fast retries by default."""

    def make(host: str, **options: Any) -> trackline.Client:
        return make_client("fault-key", host=host, on_error=ledger.on_error, **{**FAST, **options})

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ACCOUNTS:
        terminalreporter.section("reliability accounting")
        for account in _ACCOUNTS:
            terminalreporter.write_line(str(account))
