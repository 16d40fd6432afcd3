"""The real PostgreSQL of the test machine (127.0.0.1:5432, database `test`): a fresh schema per
test, dropped afterwards. When PostgreSQL does not answer, the tests that need it fail with a
line saying so (never skip: `.ci/run` checks it answers first)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

DSN = os.environ.get("TRACKLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def connect() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(DSN, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer at {DSN}: {exc}")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema name no other test uses; the schema is dropped at the end if it was made."""
    name = f"trackline_test_{uuid.uuid4().hex[:12]}"
    with connect() as conn:
        yield name
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
