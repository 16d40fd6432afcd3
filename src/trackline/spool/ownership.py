"""The spool directory: who owns which file, found through exclusive locks on lock files.

Every process writes its own spool file (`spool-<token>.sqlite`) and holds an exclusive
`flock` on the matching `spool-<token>.lock` for as long as it has the file open. The kernel
drops the lock when the process dies, however it dies, so a free lock means the file is an
orphan: a starting process takes the lock and adopts the file. Tokens start with the creation
time, so sorting names sorts files oldest first, which is the order their messages are sent in.

Lock files are unlinked by whoever holds the lock once the spool file is gone. That opens the
classic race of locking a path that another process has just unlinked (or is about to): after
taking a lock, each side checks that the path still names the inode it locked, and starts over
if it does not. Files that cannot be read are moved into `quarantine/` beside them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from typing import Final

PREFIX: Final = "spool-"
DATA_SUFFIX: Final = ".sqlite"
LOCK_SUFFIX: Final = ".lock"
QUARANTINE: Final = "quarantine"
#: Files SQLite may keep beside a database.
SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")


class FileLock:
    """An exclusive `flock` on one lock file, held while this process owns its spool file."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: str, *, create_new: bool) -> FileLock | None:
        """Lock `path` without waiting; None when another process holds it or it vanished.

        With `create_new` the file must not exist yet (a fresh token); otherwise it is opened,
        or created when a spool file has lost its lock file.
        """
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if create_new else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        return cls(path, fd)

    def release(self, *, unlink: bool) -> None:
        """Give the lock up; with `unlink`, remove the lock file first (its spool file is gone)."""
        if self._fd is None:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def forget(self) -> None:
        """In a forked child: close the inherited descriptor, leaving the lock to the parent.

        flock belongs to the open file description both processes share; if the child kept
        its copy, the lock would outlive the parent and nobody could adopt the parent's file.
        """
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def data_path(lock_path: str) -> str:
    """The spool file that belongs to a lock file."""
    return lock_path[: -len(LOCK_SUFFIX)] + DATA_SUFFIX


def create_own(directory: str) -> tuple[str, FileLock]:
    """Make a fresh, locked name for this process's spool file: (data path, lock)."""
    os.makedirs(directory, exist_ok=True)
    while True:
        token = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        lock_path = os.path.join(directory, PREFIX + token + LOCK_SUFFIX)
        lock = FileLock.take(lock_path, create_new=True)
        if lock is not None:
            return data_path(lock_path), lock


def adopt_orphans(directory: str) -> list[tuple[str, FileLock]]:
    """Lock every spool file whose owner is gone, oldest first: [(data path, lock)].

    A lock file whose spool file does not exist is left over from a clean exit that was
    interrupted; it is removed.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    tokens = sorted(
        {
            name[len(PREFIX) : -len(suffix)]
            for name in names
            for suffix in (DATA_SUFFIX, LOCK_SUFFIX)
            if name.startswith(PREFIX) and name.endswith(suffix)
        }
    )
    adopted = []
    for token in tokens:
        lock = FileLock.take(
            os.path.join(directory, PREFIX + token + LOCK_SUFFIX), create_new=False
        )
        if lock is None:
            continue
        path = data_path(lock.path)
        if os.path.exists(path):
            adopted.append((path, lock))
        else:
            remove(path)
            lock.release(unlink=True)
    return adopted


def remove(path: str) -> None:
    """Delete a spool file and whatever SQLite kept beside it."""
    for name in (path, *(path + suffix for suffix in SIDE_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def quarantine(path: str) -> str:
    """Move a spool file that cannot be read (and its side files) into `quarantine/`.

    Returns where it went. The file is kept, not deleted, so that it can be inspected.
    """
    folder = os.path.join(os.path.dirname(path), QUARANTINE)
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, os.path.basename(path))
    for suffix in ("", *SIDE_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, target + suffix)
    return target
