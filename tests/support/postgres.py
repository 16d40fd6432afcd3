"""A PostgreSQL database of its own for each test that needs one: created with a unique name
on the server the suite uses, dropped afterwards (connections and all).

The server is `TRACKLINE_TEST_POSTGRES` (an admin URL), by default the local one on
127.0.0.1:5432 as user postgres. A server that does not answer fails the test with one line
saying so: the PostgreSQL tests are part of the suite, never skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

ADMIN_URL = os.environ.get(
    "TRACKLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def admin() -> psycopg.Connection[Any]:
    """A connection to the admin database, or the test fails saying PostgreSQL is missing."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer at {ADMIN_URL}: {exc}".splitlines()[0])


def url_of(database: str) -> str:
    """The URL of `database` on the test server."""
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def fresh_database(prefix: str = "trackline_test") -> Iterator[str]:
    """A new empty database for the block; yields its URL, drops it afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_of(name)
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
