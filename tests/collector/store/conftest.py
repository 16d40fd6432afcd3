"""Store engines for the contract tests: each test that takes `engine` runs once per engine.

An engine opens a store (and opens it again, to prove what survives a restart) on its own
fresh database; add an engine by adding an entry to `ENGINES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.collector.conftest import message
from tests.support.postgres import fresh_database
from trackline.collector.ingest import Envelope, Row, process
from trackline.collector.store import SQLiteStore, Store


@dataclasses.dataclass
class Engine:
    """Opens stores on one fresh database; every store it opened is closed at the end."""

    name: str
    opener: Callable[[], Store]
    opened: list[Store] = dataclasses.field(default_factory=list)

    def open(self) -> Store:
        store = self.opener()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def _sqlite(tmp_path: Path) -> Callable[[], Store]:
    path = tmp_path / "events.sqlite3"
    return lambda: SQLiteStore(path, lock_timeout=1.0)


def _postgres(url: str) -> Callable[[], Store]:
    from trackline.collector.store.postgres import PostgresStore

    return lambda: PostgresStore(url, lock_timeout=1.0)


#: name -> factory(tmp_path or database URL) of an opener of stores on one fresh database.
ENGINES: dict[str, Callable[[Path], Callable[[], Store]]] = {"sqlite": _sqlite}
#: The same for engines on a server: each test gets a database of its own.
SERVER_ENGINES: dict[str, Callable[[str], Callable[[], Store]]] = {"postgres": _postgres}


@pytest.fixture(params=sorted([*ENGINES, *SERVER_ENGINES]))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with contextlib.ExitStack() as stack:
        if request.param in ENGINES:
            opener = ENGINES[request.param](tmp_path)
        else:
            url = stack.enter_context(fresh_database())
            opener = SERVER_ENGINES[request.param](url)
        opened = Engine(request.param, opener)
        try:
            yield opened
        finally:
            opened.close_all()


@pytest.fixture
def store(engine: Engine) -> Store:
    return engine.open()


RECEIVED = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def rows(
    *numbers: int, user: str | None = None, received_at: datetime = RECEIVED, **fields: Any
) -> list[Row]:
    """Valid track rows `message-N`; `user` gives them all one userId."""
    extra: dict[str, Any] = dict(fields)
    if user is not None:
        extra["userId"] = user
    envelope = Envelope([message(n, **extra) for n in numbers])
    return process(envelope, source="key", received_at=received_at).rows
