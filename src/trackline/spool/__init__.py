"""Durable mode: accepted messages committed to SQLite files before the call returns.

`Client(spool=directory)` uses `Spool` as its buffer instead of the memory one. Inside:

```
buffer.py     Spool: the durable Buffer; accounting of rows and files, under one lock
commit.py     group commit: concurrent calls share one transaction; the one place I/O happens
files.py      the files this process holds (its own, the adopted ones) and a commit's I/O
file.py       one SQLite spool file: schema, insert, delete, read in order
ownership.py  who owns which file: flock on lock files, orphans adopted, quarantine moves
batches.py    batches that know their rows; parts requeued after their attempt ran out
```
"""

from __future__ import annotations

from trackline.spool.buffer import Spool

__all__ = ["Spool"]
