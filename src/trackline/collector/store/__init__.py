"""The collector's store: one interface (`Store`), one engine per module.

`sqlite.py` is the embedded default: one file, one writer thread with group commit;
`sqlite_jobs.py` its delivery jobs, `sqlite_retention.py` its retention. `jobs.py` holds the
job values and rules every engine keeps.
`postgres/` is for several collector processes sharing one PostgreSQL database; it needs the
`postgres` extra and is imported only when a `postgresql://` URL asks for it.
"""

from __future__ import annotations

import os

from trackline.collector.store.base import (
    MAX_SCAN_ROWS,
    EventQuery,
    ReadTooCostly,
    RowsRefused,
    Stats,
    StorageError,
    Store,
    WriteResult,
)
from trackline.collector.store.jobs import (
    DestinationCounts,
    EventDelivery,
    Job,
    JobStatus,
    Outcome,
    Route,
    Routes,
    Settlement,
    order_key,
)
from trackline.collector.store.sqlite import SQLiteStore
from trackline.collector.store.url import is_postgres_url, redact

#: The SQLite store under the name earlier releases used.
Storage = SQLiteStore


def open_store(
    database: str | os.PathLike[str],
    *,
    lock_timeout: float = 5.0,
    fsync: bool = False,
    retention: float | None = None,
) -> Store:
    """Open the store `database` names: a `postgresql://` URL, or a SQLite file path.

    `retention` (seconds) deletes events received longer ago than that: on PostgreSQL a
    day's partition at a time, on SQLite in chunks between the group commits.
    """
    if is_postgres_url(database):
        try:
            from trackline.collector.store.postgres import PostgresStore
        except ImportError as exc:
            raise StorageError(
                f"a PostgreSQL database needs the postgres extra ({exc.name} is missing): "
                "pip install 'trackline[postgres]'"
            ) from None
        assert isinstance(database, str)
        return PostgresStore(database, lock_timeout=lock_timeout, fsync=fsync, retention=retention)
    return SQLiteStore(database, lock_timeout=lock_timeout, fsync=fsync, retention=retention)


__all__ = [
    "MAX_SCAN_ROWS",
    "DestinationCounts",
    "EventDelivery",
    "EventQuery",
    "Job",
    "JobStatus",
    "Outcome",
    "ReadTooCostly",
    "Route",
    "Routes",
    "RowsRefused",
    "SQLiteStore",
    "Settlement",
    "Stats",
    "Storage",
    "StorageError",
    "Store",
    "WriteResult",
    "is_postgres_url",
    "open_store",
    "order_key",
    "redact",
]
