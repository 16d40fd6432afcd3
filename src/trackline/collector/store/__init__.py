"""The collector's store: one interface (`Store`), one engine per module.

`sqlite.py` is the embedded default: one file, one writer thread with group commit;
`sqlite_jobs.py` its delivery jobs. `jobs.py` holds the job values and rules every engine keeps.
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

#: The SQLite store under the name earlier releases used.
Storage = SQLiteStore


def open_store(
    database: str | os.PathLike[str], *, lock_timeout: float = 5.0, fsync: bool = False
) -> Store:
    """Open the store `database` names: a SQLite file path."""
    return SQLiteStore(database, lock_timeout=lock_timeout, fsync=fsync)


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
    "open_store",
    "order_key",
]
