"""The collector's store: one interface (`Store`), one engine per module.

`sqlite.py` is the embedded default: one file, one writer thread with group commit.
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
    "EventQuery",
    "ReadTooCostly",
    "RowsRefused",
    "SQLiteStore",
    "Stats",
    "Storage",
    "StorageError",
    "Store",
    "WriteResult",
    "open_store",
]
