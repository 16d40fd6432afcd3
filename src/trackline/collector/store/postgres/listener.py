"""Events stored by other processes, fed to this process's live hub (`/api/stream`, debugger).

Every write transaction notifies (`pg_notify`, delivered at commit, in commit order) with the
id blocks it wrote, tagged with its process's token. A listener thread per process keeps a
connection that LISTENs; when somebody here watches the live stream, it reads the rows of
other processes' blocks (a primary-key range each, so a few index pages) and publishes them.
This process's own rows are published by its writer from memory, so their notifications are
skipped.

Why notifications name blocks rather than "everything after id N": ids are taken before a
transaction commits, and transactions commit in any order, so a reader following the highest
id seen would miss a transaction that took lower ids and committed later.

When the listening connection is lost, events committed meanwhile were never announced here:
subscribers are told of a gap (`EventHub.gap`), so a debugger reloads from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg

from trackline.collector.live import EventHub, LiveEvent
from trackline.collector.store.postgres.connection import Watchdog, shut_down
from trackline.collector.store.postgres.schema import BLOCK, CHANNEL, SCHEMA

logger = logging.getLogger(__name__)

#: How long one wait for notifications lasts (also how soon a stop is noticed).
POLL_SECONDS: Final = 0.5
#: After a notification, how long to gather more before reading their rows at once.
GATHER_SECONDS: Final = 0.002
#: How often an idle listening connection proves it is alive.
PROBE_SECONDS: Final = 5.0
#: Longest pause between attempts to listen again after losing the connection.
MAX_BACKOFF_SECONDS: Final = 5.0


class Listener:
    """A thread that forwards other processes' new events to `hub`."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        hub: EventHub,
        watchdog: Watchdog,
        deadline: float,
        token: str,
    ) -> None:
        self._connect = connect
        self._hub = hub
        self._watchdog = watchdog
        self._deadline = deadline
        self._token = token
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        #: Set once listening (again); tests and the store wait on it.
        self.listening = threading.Event()
        self.received = 0
        self._thread = threading.Thread(target=self._run, name="trackline-pg-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        lost = False
        while not self._stop.is_set():
            try:
                self._conn = conn = self._connect()
                with self._watchdog.guard(conn, self._deadline):
                    conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if lost:
                    self._hub.gap()
                backoff = 0.1
                self._listen(conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                if self.listening.is_set() or not lost:
                    logger.warning("live events of other processes paused: %s", exc)
                self.listening.clear()
                lost = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
        self.listening.clear()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        probed = time.monotonic()
        while not self._stop.is_set():
            notes = list(conn.notifies(timeout=POLL_SECONDS, stop_after=1))
            if notes:
                # Whatever else arrives within a moment goes out in the same read.
                notes += conn.notifies(timeout=GATHER_SECONDS)
            blocks: list[int] = []
            for note in notes:
                token, _, spans = note.payload.partition(" ")
                self.received += 1
                if token != self._token:
                    blocks += [int(start) for start in spans.split()]
            if blocks and self._hub.has_subscribers:
                self._publish(conn, blocks)
            if time.monotonic() - probed > PROBE_SECONDS:
                # A black-holed connection never says so by itself: ask it something.
                with self._watchdog.guard(conn, self._deadline):
                    conn.execute("SELECT 1")
                probed = time.monotonic()

    def _publish(self, conn: psycopg.Connection[Any], blocks: list[int]) -> None:
        with self._watchdog.guard(conn, self._deadline):
            rows = conn.execute(
                "SELECT e.id, e.body, e.source "
                "FROM unnest(%s::bigint[]) WITH ORDINALITY AS b(start, n) "
                f"CROSS JOIN LATERAL (SELECT id, body, source FROM {SCHEMA}.events "
                f"WHERE id >= b.start AND id < b.start + {BLOCK}) AS e ORDER BY b.n, e.id",
                (blocks,),
            ).fetchall()
        if rows:
            self._hub.publish([LiveEvent(*row) for row in rows])

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            shut_down(conn)  # ends a wait for notifications now rather than at its timeout
        self._thread.join(POLL_SECONDS * 4 + 5.0)
