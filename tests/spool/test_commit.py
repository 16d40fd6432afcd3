"""Group commit: concurrent callers share writes, each returns once its own row is written, a
failed write reaches every caller of its group, no group is left without a writer, and the I/O
runs without the lock."""

from __future__ import annotations

import threading
import time

from trackline.errors import DeliveryError
from trackline.spool.commit import GroupCommit
from trackline.spool.file import Row, SpoolFile
from trackline.stats import DropReason


class Recorder:
    """The write and settle callbacks of a GroupCommit: record each group; the first write can
    be held until released, and a group containing a marked ordinal fails."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.groups: list[list[int]] = []
        self.deletes: list[dict[SpoolFile, list[int]]] = []
        self.retired: list[dict[SpoolFile, bool]] = []
        self.locked_during_io: list[bool] = []
        self.hold_first = threading.Event()
        self.hold_first.set()
        self.started = threading.Event()
        self.fail_ordinal: int | None = None

    def write(
        self, rows: list[Row], deletes: dict[SpoolFile, list[int]], retiring: dict[SpoolFile, bool]
    ) -> bool:
        self.locked_during_io.append(self.lock.locked())
        self.started.set()
        if not self.groups:
            self.hold_first.wait(5)
        self.groups.append([row[0] for row in rows])
        self.deletes.append(deletes)
        self.retired.append(retiring)
        return self.fail_ordinal not in [row[0] for row in rows]

    def settle(self, rows: list[Row], admitted: set[int], ok: bool) -> DeliveryError | None:
        return None if ok else DeliveryError(DropReason.SPOOL_FULL, "disk full")


def make() -> tuple[threading.Lock, GroupCommit[bool], Recorder]:
    lock = threading.Lock()
    recorder = Recorder(lock)
    return lock, GroupCommit(lock, recorder.write, recorder.settle), recorder


def add(lock: threading.Lock, commit: GroupCommit[bool], ordinal: int) -> DeliveryError | None:
    with lock:
        return commit.add((ordinal, 0.0, b"m"))


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    """While one write is under way, eight more callers arrive: they go out together in one
    write, and each returns only once that write is done."""
    lock, commit, recorder = make()
    recorder.hold_first.clear()
    results: dict[int, DeliveryError | None] = {}
    first = threading.Thread(target=lambda: results.update({0: add(lock, commit, 0)}))
    first.start()
    assert recorder.started.wait(5)
    others = [
        threading.Thread(target=lambda n=n: results.update({n: add(lock, commit, n)}))
        for n in range(1, 9)
    ]
    for thread in others:
        thread.start()
    time.sleep(0.1)
    assert results == {}
    recorder.hold_first.set()
    for thread in [first, *others]:
        thread.join(5)
    assert results == dict.fromkeys(range(9))
    assert recorder.groups[0] == [0]
    assert sorted(n for group in recorder.groups[1:] for n in group) == list(range(1, 9))
    assert len(recorder.groups) <= 3


def test_a_failed_write_fails_every_caller_of_its_group_only() -> None:
    """The error of a failed write is returned to each caller whose row was in it; the next
    write succeeds for its callers."""
    lock, commit, recorder = make()
    recorder.fail_ordinal = 1
    assert add(lock, commit, 0) is None
    error = add(lock, commit, 1)
    assert error is not None
    assert error.reason == "spool_full"
    assert add(lock, commit, 2) is None
    with lock:
        assert commit.durable == 3


def test_a_group_whose_leader_vanished_is_written_by_a_follower() -> None:
    """If the caller that should write a group never does (interrupted), a caller that joined
    it writes it after a short wait instead of waiting forever."""
    lock, commit, recorder = make()
    with lock:
        commit.pending.append((0, 0.0, b"abandoned"))
    began = time.monotonic()
    assert add(lock, commit, 1) is None
    assert time.monotonic() - began < 2
    assert recorder.groups == [[0, 1]]


def test_write_deletes_returns_once_the_queued_deletes_are_written() -> None:
    """Deletes queued before the call are written by the time it returns, by this caller when
    nobody else is writing."""
    lock, commit, recorder = make()
    file = object.__new__(SpoolFile)
    with lock:
        commit.delete(file, [4, 5])
        commit.write_pending()
    assert recorder.deletes == [{file: [4, 5]}]


def test_a_retired_file_is_closed_by_the_next_write_without_its_deletes() -> None:
    """A file retired after deletes were queued for it goes to the next write as a file to
    close, and its deletes are dropped; the write runs with the lock let go."""
    lock, commit, recorder = make()
    drained, damaged = object.__new__(SpoolFile), object.__new__(SpoolFile)
    with lock:
        commit.delete(drained, [1])
        commit.retire(drained, damaged=False)
        commit.retire(damaged, damaged=True)
        commit.write_pending()
    assert recorder.deletes == [{}]
    assert recorder.retired == [{drained: False, damaged: True}]
    assert recorder.locked_during_io == [False]
