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
- `event_counts`, `totals` and `job_counts` take one appended row of deltas per transaction,
  never an update of a shared counter row (which would serialise every writer on one row lock
  and leave a dead tuple per commit); maintenance folds them from time to time.
- Delivery jobs (`jobs.py`) are rows that never change, and their states are status rows
  appended (rudder-server's jobs and job_status tables), in partitions numbered like the
  events' and dropped with them.
"""

from __future__ import annotations

import secrets
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
    # Delivery jobs (see jobs.py): job rows and their status rows, both appended only and
    # partitioned like the events (a job's id is its event's id, or a fresh block's for a
    # replay), so they too are dropped whole; counts as appended deltas.
    2: f"""
ALTER TABLE {SCHEMA}.totals ADD COLUMN unroutable bigint NOT NULL DEFAULT 0;
CREATE TABLE {SCHEMA}.destinations (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE SEQUENCE {SCHEMA}.claims AS bigint;
CREATE SEQUENCE {SCHEMA}.job_status_seq AS bigint;
CREATE TABLE {SCHEMA}.jobs (
    destination integer NOT NULL,
    id bigint NOT NULL,
    event_id bigint NOT NULL,
    order_key bigint NOT NULL,
    PRIMARY KEY (destination, id)
) PARTITION BY RANGE (id);
-- An event's jobs, newest first per destination (deliveries, replay).
CREATE INDEX jobs_event ON {SCHEMA}.jobs (event_id, destination, id);
-- A job's state is its newest status row; none yet: pending, never attempted.
CREATE TABLE {SCHEMA}.job_status (
    destination integer NOT NULL,
    job_id bigint NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('{SCHEMA}.job_status_seq'),
    state text NOT NULL,
    attempts integer NOT NULL,
    not_before double precision NOT NULL,
    first_attempt_at double precision,
    error text,
    claim bigint,
    lease_until timestamptz,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (destination, job_id, seq)
) PARTITION BY RANGE (job_id);
CREATE INDEX job_status_failed ON {SCHEMA}.job_status (destination, job_id)
    WHERE state = 'failed';
CREATE TABLE {SCHEMA}.job_counts (
    destination integer NOT NULL,
    pending bigint NOT NULL DEFAULT 0,
    retrying bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    last_error text,
    last_error_at timestamptz,
    last_success_at timestamptz
);
""",
    # Values the store keeps about itself: the key id secret every process shares.
    3: f"""
CREATE TABLE {SCHEMA}.meta (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
""",
}

#: The schema version this code writes.
VERSION: Final = max(MIGRATIONS)


#: The tables partitioned by id range, each partition `{table}_{number}`.
PARTITIONED: Final = ("events", "jobs", "job_status")


def partition_table(number: int, table: str = "events") -> str:
    """The qualified name of partition `number` of `table`."""
    return f"{SCHEMA}.{table}_{number}"


def create_partition(conn: psycopg.Connection[Any], number: int) -> None:
    """Create partition `number` of every partitioned table, empty, and attach it; the events'
    with its unique messageId index.

    Each table is made apart and then attached: attaching takes a weaker lock on the parent
    than `CREATE TABLE ... PARTITION OF`, so writers and readers carry on meanwhile.
    """
    for parent in PARTITIONED:
        table = partition_table(number, parent)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (LIKE {SCHEMA}.{parent} INCLUDING DEFAULTS)"
        )
        if parent == "events":
            conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS events_{number}_message_id "
                f"ON {table} (message_id)"
            )
        attached = conn.execute(
            "SELECT 1 FROM pg_inherits WHERE inhrelid = %s::regclass", (table,)
        ).fetchone()
        if attached is None:
            conn.execute(
                f"ALTER TABLE {SCHEMA}.{parent} ATTACH PARTITION {table} "
                f"FOR VALUES FROM ({number * SPAN}) TO ({(number + 1) * SPAN})"
            )
    conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (number) VALUES (%s) ON CONFLICT DO NOTHING", (number,)
    )


def key_secret(conn: psycopg.Connection[Any]) -> bytes:
    """The store's key id secret (`Store.key_secret`), made now if it has none; the first
    process to make one wins, every other reads that one."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.meta (name, value) VALUES ('key_id_secret', %s) "
        "ON CONFLICT (name) DO NOTHING",
        (secrets.token_bytes(32),),
    )
    row = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE name = 'key_id_secret'").fetchone()
    assert row is not None
    return bytes(row[0])


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
        elif found < VERSION:
            # Tables a migration added are partitioned too: give them every partition.
            numbers = conn.execute(
                f"SELECT number FROM {SCHEMA}.partitions WHERE dropped_at IS NULL"
            ).fetchall()
            for (number,) in numbers:
                create_partition(conn, number)
    return found
