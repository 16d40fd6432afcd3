"""The collector's store on PostgreSQL, for several collector processes (on one machine or
many) sharing one database: dedupe, counts, reads and the live stream hold across all of them.

Needs the `postgres` extra (`pip install 'trackline[postgres]'`, psycopg 3). Chosen by
`open_store` for a `postgresql://` URL. See `store.py` for the process's parts, `schema.py`
for the tables and why they look so, `partitions.py` for rotation and retention.
"""

from __future__ import annotations

from trackline.collector.store.postgres.schema import VERSION as SCHEMA_VERSION
from trackline.collector.store.postgres.store import PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore"]
