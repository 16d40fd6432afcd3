"""The local collector: a Segment-compatible Tracking API server that stores events in SQLite.

Needs the `collector` extra (`pip install 'trackline[collector]'`); importing `trackline`
alone never imports it.

```python
from trackline.collector import serve

with serve("events.sqlite3") as collector:      # a free port on 127.0.0.1
    client = trackline.Client("KEY", host=collector.url)
```
"""

from __future__ import annotations

from trackline.collector.access import OpenBindError
from trackline.collector.app import create_app
from trackline.collector.server import RunningCollector, run, serve, start
from trackline.collector.settings import CollectorSettings, SettingsOptions
from trackline.collector.store import SQLiteStore, Storage, StorageError, Store, open_store

__all__ = [
    "CollectorSettings",
    "OpenBindError",
    "RunningCollector",
    "SQLiteStore",
    "SettingsOptions",
    "Storage",
    "StorageError",
    "Store",
    "create_app",
    "open_store",
    "run",
    "serve",
    "start",
]
