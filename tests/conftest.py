"""Shared fixtures: a scripted capturing server, clients that are always shut down, and a guard
that fails a test when trackline logged an error it otherwise swallowed."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import trackline
from tests.support.capture import CaptureServer

if TYPE_CHECKING:
    from trackline.collector import RunningCollector


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A capturing HTTP server on 127.0.0.1 answering 200 unless scripted otherwise."""
    with CaptureServer() as server:
        yield server


@pytest.fixture
def make_client() -> Iterator[Callable[..., trackline.Client]]:
    """Build clients for a test; each is shut down (briefly) when the test ends."""
    clients: list[trackline.Client] = []

    def make(*args: Any, **kwargs: Any) -> trackline.Client:
        client = trackline.Client(*args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown(timeout=1.0)


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[RunningCollector]:
    """The local collector (which dedupes on messageId) on 127.0.0.1 with a fresh database."""
    from trackline.collector import serve

    with serve(tmp_path / "events.sqlite3") as running:
        yield running


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new PostgreSQL database of this test's own, dropped afterwards."""
    from tests.support.postgres import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(autouse=True)
def no_swallowed_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if trackline logged an exception it swallowed (a bug, not a delivery
    problem: those are warnings)."""
    caplog.set_level(logging.WARNING, logger="trackline")
    yield
    errors = [
        record
        for record in caplog.get_records("call")
        if record.name.startswith("trackline")
        and record.levelno >= logging.ERROR
        and not getattr(record, "expected", False)
    ]
    assert not errors, [record.getMessage() for record in errors]
