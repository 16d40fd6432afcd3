"""The PostgreSQL store's schema, as numbered migrations applied in order at start.

Everything lives in the `trackline` schema of the database the URL names. Migrations run in
one transaction under an advisory lock, so collectors starting together migrate once; a
database whose schema is newer than this code knows is refused, untouched.

The shape, and why (rudder-server's jobsdb and PostHog's Cyclotron taught it): nothing that
grows is updated in place, and nothing old is deleted row by row.

- `events` is partitioned by ranges of its id. Ids come in blocks of `BLOCK` from a sequence,
  so one transaction's rows have contiguous ids and a live-stream notification names them in
  a few bytes. Partition *k* holds ids `[k * SPAN, (k + 1) * SPAN)`; the partition being
  written is switched by moving the sequence (see `partitions.py`), once a period (a day), so
  every partition holds a span of arrival time and retention drops whole partitions.
- `messageId` is unique within a partition (a unique index), and a write also checks the
  partition before: dedupe holds across every process for at least one partition period.
- `event_counts` and `totals` take one appended row of deltas per transaction, never an
  update of a shared counter row (which would serialise every writer on one row lock and
  leave a dead tuple per commit); maintenance folds them from time to time.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from trackline.collector.store.base import StorageError

#: Schema (namespace) of every table.
SCHEMA: Final = "trackline"
#: Ids per block: one transaction takes one block per this many rows.
BLOCK: Final = 1024
#: Ids per partition (2**40): a partition is switched long before its span is used up, and
#: 8,192 partitions keep ids below 2**53, which JavaScript reads exactly.
SPAN: Final = 1 << 40
#: Notification channel of newly stored events (see `listener.py`).
CHANNEL: Final = "trackline_events"
#: First key of every advisory lock the store takes (second keys below).
LOCK_SPACE: Final = 0x74726B6C  # "trkl"
#: Held shared by every write transaction, exclusively to switch partitions or clear.
ROTATE_LOCK: Final = 1
#: Held by the one process doing maintenance.
MAINTENANCE_LOCK: Final = 2
#: Held while migrating.
MIGRATE_LOCK: Final = 3

_EVENT_COLUMNS: Final = """
    message_id text NOT NULL,
    type text NOT NULL,
    user_id text,
    anonymous_id text,
    event text,
    source text NOT NULL,
    received_at text NOT NULL,
    timestamp text NOT NULL,
    body text NOT NULL
"""

#: Migration number -> SQL. Never edit a released migration: add the next one.
MIGRATIONS: Final[dict[int, str]] = {
    1: f"""
CREATE SEQUENCE {SCHEMA}.event_blocks AS bigint
    INCREMENT BY {BLOCK} MINVALUE {BLOCK} START WITH {BLOCK};
CREATE TABLE {SCHEMA}.events (
    id bigint NOT NULL,
    {_EVENT_COLUMNS}
) PARTITION BY RANGE (id);
ALTER TABLE {SCHEMA}.events ADD PRIMARY KEY (id);
CREATE INDEX events_user_id ON {SCHEMA}.events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_anonymous_id ON {SCHEMA}.events (anonymous_id)
    WHERE anonymous_id IS NOT NULL;
CREATE INDEX events_event ON {SCHEMA}.events (event) WHERE event IS NOT NULL;
-- received_at grows with the id: a BRIN index is a few pages where a btree would be a copy.
CREATE INDEX events_received_at ON {SCHEMA}.events USING brin (received_at);
-- One row per partition; opened_at is set when writing into it starts, closed_at when it
-- ends, dropped_at when retention starts dropping it.
CREATE TABLE {SCHEMA}.partitions (
    number integer PRIMARY KEY,
    opened_at timestamptz,
    closed_at timestamptz,
    dropped_at timestamptz
);
CREATE TABLE {SCHEMA}.event_counts (
    part integer NOT NULL,
    type text NOT NULL,
    source text NOT NULL,
    n bigint NOT NULL
);
CREATE TABLE {SCHEMA}.totals (
    duplicates bigint NOT NULL,
    rejected bigint NOT NULL
);
""",
}

#: The schema version this code writes.
VERSION: Final = max(MIGRATIONS)


def partition_table(number: int) -> str:
    """The qualified name of partition `number`."""
    return f"{SCHEMA}.events_{number}"


def create_partition(conn: psycopg.Connection[Any], number: int) -> None:
    """Create partition `number` empty, with its unique messageId index, and attach it.

    The table is made apart and then attached: attaching takes a weaker lock on `events`
    than `CREATE TABLE ... PARTITION OF`, so writers and readers carry on meanwhile.
    """
    table = partition_table(number)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE {SCHEMA}.events INCLUDING DEFAULTS)")
    conn.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS events_{number}_message_id ON {table} (message_id)"
    )
    attached = conn.execute(
        "SELECT 1 FROM pg_inherits WHERE inhrelid = %s::regclass", (table,)
    ).fetchone()
    if attached is None:
        conn.execute(
            f"ALTER TABLE {SCHEMA}.events ATTACH PARTITION {table} "
            f"FOR VALUES FROM ({number * SPAN}) TO ({(number + 1) * SPAN})"
        )
    conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (number) VALUES (%s) ON CONFLICT DO NOTHING", (number,)
    )


def migrate(conn: psycopg.Connection[Any], where: str) -> int:
    """Bring the schema to `VERSION`; returns the version found. `where` names the database
    in the error for a newer schema. `conn` must not be in a transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, MIGRATE_LOCK))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute(f"SELECT max(version) FROM {SCHEMA}.schema_migrations").fetchone()
        found = int(row[0]) if row is not None and row[0] is not None else 0
        if found > VERSION:
            raise StorageError(
                f"{where} has trackline schema version {found}, newer than this trackline "
                f"knows ({VERSION}): upgrade trackline, or use another database"
            )
        for number in range(found + 1, VERSION + 1):
            conn.execute(MIGRATIONS[number])
            conn.execute(f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (%s)", (number,))
        if found == 0:
            create_partition(conn, 0)
            conn.execute(f"UPDATE {SCHEMA}.partitions SET opened_at = now() WHERE number = 0")
    return found
