"""Copying the SQLite store's write-ahead log into its file on a thread of its own.

A commit goes to the write-ahead log; a checkpoint copies the log's pages into the database file
and syncs it, so that the log can start over. Left to SQLite, the commit that crosses the mark
runs the checkpoint itself, and every request of that group commit, and of the groups queued
behind it, waits for the copy and the sync: in a large store, whose pages are spread over the
file, that wait is most of the slowest acknowledgements. Here a second connection copies the
log after each commit (a PASSIVE checkpoint, which never blocks the writer nor waits for it),
so the writer's own checkpoint, kept as a bound on the log, finds the pages copied already.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

#: Shortest time between two checkpoints: while commits come faster than this, their pages
#: are copied (and the file synced) together, at most 100 times a second. Measured on a store
#: of twelve million events: 50 ms let the log run ahead (p99 60 to 82 ms at 80% load, 20,600
#: to 21,600 events/s at full load); 10 ms kept up (p99 16 to 27 ms in five runs of six; 23,200
#: to 23,500 events/s); no pause was a little faster at full load (24,800 to 25,800) and had
#: more slow runs at 80% load (p99 360 and 680 ms in two of four).
MIN_INTERVAL: Final = 0.01
#: Longest wait without a commit before looking again (a missed nudge costs no more).
IDLE_WAIT: Final = 1.0


class Checkpointer:
    """A thread that checkpoints the store's log on its own connection after commits."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._wake = threading.Event()
        self._stopped = False
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """A commit added to the log."""
        self._wake.set()

    def close(self, timeout: float | None = 10.0) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopped:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()
                if self._stopped:
                    break
                self._checkpoint()
                time.sleep(MIN_INTERVAL)
        finally:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # The writer's own checkpoint still bounds the log; this one tries again later.
            logger.debug("background checkpoint failed: %s", exc)
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
