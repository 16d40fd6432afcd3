"""One spool file: encoded messages as rows of a SQLite database in WAL mode.

A row is (seq, created, data): `seq` orders the messages, `created` (wall-clock seconds) lets
`max_age` expire them across restarts, `data` is the encoded message exactly as it is sent.
Rows are inserted before a call returns and deleted once delivered or dropped.

A file has one connection in exclusive locking mode: the file is this process's alone (the
lock file says so), and without shared-memory locks a commit costs half the system calls. The
spool's group-commit writer uses it from one thread at a time and a worker reads batches through
it; the two take turns whole statements at a time (`_statements`). SQLite alone would interleave
them step by step, and then a write that fails (a full disk) while a read is under way leaves
the connection in a state where the next write reports success without reaching the file: a
message acknowledged and then lost. A commit waits at most for one read of a batch (about 5 ms
for 2,500 messages, once per batch sent). Checkpoints are SQLite's own automatic ones,
every 1000 pages, run by the commit that crosses the mark.

With `synchronous=NORMAL` a commit is a write to the WAL without fsync: it survives the process
being killed, not the machine losing power. `FULL` fsyncs every commit and survives both.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Final

from trackline.spool.ownership import FileLock
from trackline.wire import batch_bytes

#: Marks a SQLite file as a trackline spool ("TRKL").
APPLICATION_ID: Final = 0x54524B4C
SCHEMA_VERSION: Final = 1
#: How long opening a file waits while another process (a tool inspecting it) holds it.
BUSY_TIMEOUT: Final = 1.0

_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26

_INSERT: Final = "INSERT INTO messages (seq, created, data) VALUES (?, ?, ?)"
_DELETE: Final = "DELETE FROM messages WHERE seq BETWEEN ? AND ?"
_READ: Final = (
    "SELECT seq, created, data FROM messages WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT ?"
)

Row = tuple[int, float, bytes]

#: Connections a forked child inherited. They are never used again, and never closed either:
#: closing them could checkpoint or unlock the parent's files.
_inherited: list[sqlite3.Connection] = []


class SpoolCorrupt(Exception):
    """The file is not a readable trackline spool."""


def is_corrupt(exc: BaseException) -> bool:
    """Whether a SQLite error means the file itself is damaged, not that a write failed."""
    if isinstance(exc, SpoolCorrupt):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def is_disk_full(exc: BaseException) -> bool:
    """Whether a SQLite error means the disk (or the file's size limit) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_FULL


class SpoolFile:
    """One SQLite spool file and the lock that makes it this process's.

    The counters below describe the rows and are kept by the spool under its own lock.
    """

    def __init__(self, path: str, lock: FileLock, synchronous: str, *, adopted: bool) -> None:
        """Open (or create) the file; raises `SpoolCorrupt` or `sqlite3.Error` if it is bad."""
        self.path = path
        self.lock = lock
        self.adopted = adopted
        self.lost = False
        #: An adopted file whose creator died before writing its schema: it holds nothing.
        self._blank = False
        #: Rows in the file, taken or not, that are not yet delivered or dropped.
        self.remaining = 0
        #: Rows not yet handed to a worker, and their bytes.
        self.untaken = 0
        self.untaken_bytes = 0
        #: The next seq to read.
        self.cursor = 0
        #: Held for each use of the connection, a statement (or a transaction) at a time.
        self._statements = threading.Lock()
        self._db = _connect(path, synchronous)
        try:
            self._check_or_create(create=not adopted)
        except BaseException:
            self._db.close()
            raise

    def _check_or_create(self, *, create: bool) -> None:
        db = self._db
        if create:
            # One transaction, so a file is either blank or a complete spool.
            db.executescript(
                f"""
                BEGIN;
                PRAGMA application_id = {APPLICATION_ID};
                PRAGMA user_version = {SCHEMA_VERSION};
                CREATE TABLE messages (
                    seq INTEGER PRIMARY KEY, created REAL NOT NULL, data BLOB NOT NULL
                );
                COMMIT;
                """
            )
            return
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (tables,) = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        if application_id == 0 and version == 0 and tables == 0:
            self._blank = True
        elif application_id != APPLICATION_ID or version != SCHEMA_VERSION:
            raise SpoolCorrupt(f"not a trackline spool (id {application_id}, version {version})")

    def scan(self) -> tuple[int, int, int]:
        """(rows, bytes, first seq) of what the file holds; reads every row's header."""
        if self._blank:
            return 0, 0, 0
        with self._statements:
            count, size, first = self._db.execute(
                "SELECT count(*), total(length(data)), min(seq) FROM messages"
            ).fetchone()
        return int(count), int(size), int(first or 0)

    @staticmethod
    def count_rows(path: str) -> int | None:
        """How many messages a damaged file holds, if SQLite can still tell; else None."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        except sqlite3.Error:
            return None
        try:
            (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
            return int(count)
        except sqlite3.Error:
            return None
        finally:
            db.close()

    def write(self, rows: Sequence[Row], deletes: Iterable[int]) -> None:
        """Insert `rows` and delete the seqs in `deletes`, in one transaction."""
        ranges = _runs(deletes)
        with self._statements:
            self._write(rows, ranges)

    def _write(self, rows: Sequence[Row], ranges: list[tuple[int, int]]) -> None:
        db = self._db
        if len(rows) == 1 and not ranges:
            db.execute(_INSERT, rows[0])
            return
        db.execute("BEGIN")
        try:
            if rows:
                db.executemany(_INSERT, rows)
            if ranges:
                db.executemany(_DELETE, ranges)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def read(self, start: int, end: int, max_items: int, max_bytes: int) -> list[Row]:
        """Rows with start <= seq < end, in order, within the batch limits.

        The first row is always returned; the next ones while sizes plus separators fit
        `max_bytes`.
        """
        rows: list[Row] = []
        size = 0
        with self._statements:
            cursor = self._db.execute(_READ, (start, end, max_items))
            try:
                for row in cursor:
                    size += len(row[2])
                    if rows and batch_bytes(size, len(rows) + 1) > max_bytes:
                        break
                    rows.append(row)
            finally:
                cursor.close()
        return rows

    def close(self) -> None:
        """Close the connection (which checkpoints and removes the WAL)."""
        with self._statements, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def forget(self) -> None:
        """In a forked child: let go of the parent's file without touching it."""
        _inherited.append(self._db)
        self.lock.forget()


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        # Exclusive before WAL: then the WAL index lives in memory, not in a shared -shm file.
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
    except BaseException:
        db.close()
        raise
    return db


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive numbers, for range deletes."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs
