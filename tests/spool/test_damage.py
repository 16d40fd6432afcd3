"""Durable mode when the disk lets it down: unreadable files are quarantined and counted, the
client starts clean and never crash-loops; a full disk drops new messages as `store_unavailable`
without raising; leftovers of interrupted starts and exits are cleaned up."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import trackline
from tests.support import spool_full_disk as full_disk
from tests.support.capture import CaptureServer, Reply
from tests.support.spool_support import returned_ids, run_child
from trackline.spool import file as spool_file

MakeClient = Callable[..., trackline.Client]
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "flush_interval": 0.02}
TOKEN = "spool-00000000000000000001-1-00000000"


def warnings_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_garbage_file_is_quarantined_and_the_client_starts_clean(
    tmp_path: pathlib.Path,
    capture: CaptureServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A spool file that is not a database is moved into quarantine/ with a warning naming
    it; the client works as if the directory were empty, and the next start finds nothing."""
    (tmp_path / f"{TOKEN}.sqlite").write_bytes(os.urandom(8192))
    client = make_client("k", host=capture.url, spool=tmp_path, **FAST)
    assert (tmp_path / "quarantine" / f"{TOKEN}.sqlite").exists()
    assert not (tmp_path / f"{TOKEN}.sqlite").exists()
    assert not (tmp_path / f"{TOKEN}.lock").exists()
    assert "cannot be read" in warnings_text(caplog)
    assert TOKEN in warnings_text(caplog)
    message_id = client.track("u", "After")
    assert client.flush(5)
    assert capture.delivered_ids() == [message_id]
    client.shutdown(5)
    again = make_client("k", host=capture.url, spool=tmp_path, **FAST)
    assert again.stats.enqueued == 0


def test_a_database_that_is_not_a_spool_is_quarantined_and_its_rows_counted(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """A file whose rows can be counted but which is not a trackline spool (another
    application's id) counts its rows as `store_corrupt`, reported to on_error."""
    db = sqlite3.connect(tmp_path / f"{TOKEN}.sqlite")
    db.executescript(
        "PRAGMA application_id = 7;"
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY, created REAL, data BLOB);"
        "INSERT INTO messages VALUES (1, 0, x'00'), (2, 0, x'00'), (3, 0, x'00');"
    )
    db.close()
    errors: list[tuple[str, int]] = []
    client = make_client(
        "k",
        host=capture.url,
        spool=tmp_path,
        on_error=lambda error, messages: errors.append((error.reason, len(messages))),
        **FAST,
    )
    stats = client.stats
    assert stats.dropped == {"store_corrupt": 3}
    assert stats.enqueued == 3
    assert stats.unaccounted == 0
    assert errors == [("store_corrupt", 0)]
    assert (tmp_path / "quarantine" / f"{TOKEN}.sqlite").exists()


def test_a_truncated_spool_file_is_quarantined(
    tmp_path: pathlib.Path, capture: CaptureServer, make_client: MakeClient
) -> None:
    """A real spool file cut in half (a torn copy, a bad disk) is quarantined at start; the
    client delivers its own messages normally."""
    capture.default = Reply(503)
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    run_child(spool, capture.url, ids, "--count", "2000", "--shutdown", "0")
    [path] = spool.glob("spool-*.sqlite")
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)
    capture.default = Reply(200)
    client = make_client("k", host=capture.url, spool=spool, **FAST)
    assert (spool / "quarantine" / path.name).exists()
    assert client.stats.queued == 0
    message_id = client.track("u", "After")
    assert client.flush(5)
    assert capture.delivered_ids() == [message_id]


def test_a_file_damaged_while_running_is_quarantined_and_counted(
    tmp_path: pathlib.Path,
    capture: CaptureServer,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When reading a batch reports the file as malformed, the file is moved aside, what it
    still held is counted as `store_corrupt`, and the next calls go to a fresh file."""
    capture.default = Reply(503)
    client = make_client("k", host=capture.url, spool=tmp_path, flush_at=2500, flush_interval=30.0)
    for index in range(30):
        client.track("u", "Before", {"index": index})

    def malformed(*args: Any) -> list[spool_file.Row]:
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = 11  # type: ignore[attr-defined]
        raise error

    monkeypatch.setattr(spool_file.SpoolFile, "read", malformed)
    client.flush(0.5)
    monkeypatch.undo()
    assert len(list((tmp_path / "quarantine").glob("spool-*.sqlite"))) == 1
    capture.default = Reply(200)
    after = client.track("u", "After")
    assert client.flush(5)
    assert capture.delivered_ids() == [after]
    stats = client.stats
    assert stats.dropped == {"store_corrupt": 30}
    assert stats.unaccounted == 0


def test_a_full_disk_drops_new_messages_and_never_raises(
    tmp_path: pathlib.Path, capture: CaptureServer
) -> None:
    """With the process's files limited to 300 KB (writes past it fail, as on a full disk),
    calls past the limit return None and count `store_unavailable`; the process carries on and
    exits cleanly, and what fit on disk is delivered by the next process."""
    capture.default = Reply(503)
    spool, ids = tmp_path / "spool", tmp_path / "ids"
    output = run_child(
        spool, capture.url, ids, "--count", "2000", "--max-file-bytes", "300000", "--shutdown", "0"
    )
    kept = returned_ids(ids)
    assert 0 < len(kept) < 2000
    assert f"dropped={{'store_unavailable': {2000 - len(kept)}}}" in output
    capture.default = Reply(200)
    client = trackline.Client("k", host=capture.url, spool=spool, **FAST)  # type: ignore[arg-type]
    try:
        assert client.flush(5)
    finally:
        client.shutdown(5)
    assert capture.delivered_ids() == kept


def test_leftovers_of_interrupted_starts_are_removed(
    tmp_path: pathlib.Path, make_client: MakeClient
) -> None:
    """A lock file without its spool file, and a spool file created but never given its
    schema (a crash during creation), are removed without a quarantine."""
    (tmp_path / "spool-00000000000000000001-1-aaaaaaaa.lock").touch()
    (tmp_path / "spool-00000000000000000002-1-bbbbbbbb.sqlite").touch()
    sqlite3.connect(tmp_path / "spool-00000000000000000003-1-cccccccc.sqlite").close()
    client = make_client("k", spool=tmp_path, send=False)
    names = os.listdir(tmp_path)
    for gone in ("aaaaaaaa", "bbbbbbbb", "cccccccc", "quarantine"):
        assert not [name for name in names if gone in name], names
    assert client.stats.enqueued == 0


def test_an_unwritable_spool_directory_drops_calls_and_never_raises(
    tmp_path: pathlib.Path, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool path that cannot be a directory makes calls return None (`store_unavailable`,
    with a warning saying why) instead of raising into the app."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file")
    client = make_client("k", spool=blocker, **FAST)
    assert client.track("u", "Lost") is None
    assert client.stats.dropped == {"store_unavailable": 1}
    assert "cannot create a spool file" in warnings_text(caplog)


def test_a_write_that_returns_on_a_full_disk_is_in_the_file_while_a_worker_reads(
    tmp_path: pathlib.Path,
) -> None:
    """A worker reading batches while writes start failing for a full disk: every write that
    returned without an error is in the file (SQLite, reading and writing one connection step
    by step from two threads, would report a later write written that never reached it)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.spool_full_disk", str(tmp_path), "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    written: dict[str, list[int]] = json.loads(done.stdout)
    assert len(written) == 20
    for path, seqs in written.items():
        assert 0 < len(seqs) < full_disk.WRITES  # the disk did fill up
        db = sqlite3.connect(path)
        try:
            stored = [seq for (seq,) in db.execute("SELECT seq FROM messages ORDER BY seq")]
        finally:
            db.close()
        assert stored == seqs, path
