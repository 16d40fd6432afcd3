"""Helpers for the durable-mode tests: child processes on a spool, and what ended up where.

`start_child` / `run_child` run `tests/support/spool_child.py`; `drain` delivers what a spool
holds; `returned_ids` reads the ids a child wrote; `spool_rows` reads spool files (only those
no live process holds: a live client keeps its file exclusively); `stored_ids` reads what the
collector stored; `refused_url` is a host where every request is refused: an outage, as far as
a client can tell.
"""

from __future__ import annotations

import pathlib
import socket
import sqlite3
import subprocess
import sys

import orjson

import trackline

CHILD = [sys.executable, "-m", "tests.support.spool_child"]


def start_child(
    spool: pathlib.Path, host: str, ids: pathlib.Path, *options: str
) -> subprocess.Popen[str]:
    """Start a child client and return once it printed "ready" (it adopted what it found)."""
    child = subprocess.Popen(
        [*CHILD, str(spool), host, str(ids), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        _, errors = child.communicate()
        raise AssertionError(f"the child did not start: {errors}")
    return child


def finish_child(child: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Wait for a child started with `--count`; returns its output; fails if it failed."""
    output, errors = child.communicate(timeout=timeout)
    assert child.returncode == 0, errors
    return output


def run_child(spool: pathlib.Path, host: str, ids: pathlib.Path, *options: str) -> str:
    """Run a child to its end (it needs `--count`); returns its output."""
    return finish_child(start_child(spool, host, ids, *options))


def kill_child(child: subprocess.Popen[str]) -> None:
    """SIGKILL a child and reap it (without waiting for its pipes: a process it forked may
    still hold them)."""
    child.kill()
    child.wait()
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def drain(spool: pathlib.Path, host: str, timeout: float = 20.0) -> trackline.Stats:
    """Start one more client on the spool, let it deliver what was left, shut it down."""
    client = trackline.Client("spool-key", host=host, spool=spool, flush_interval=0.02)
    try:
        assert client.flush(timeout)
    finally:
        client.shutdown(5)
    return client.stats


def returned_ids(path: pathlib.Path) -> list[str]:
    """Ids a child wrote after its calls returned; a last line cut by a kill is not one."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [line for line in lines[:-1] if line]


def spool_rows(directory: pathlib.Path) -> list[tuple[int, bytes]]:
    """(seq, data) of every row of every spool file in `directory`, oldest file first."""
    rows: list[tuple[int, bytes]] = []
    for path in sorted(directory.glob("spool-*.sqlite")):
        db = sqlite3.connect(path)
        try:
            rows.extend(db.execute("SELECT seq, data FROM messages ORDER BY seq").fetchall())
        finally:
            db.close()
    return rows


def message_id(data: bytes) -> str:
    """The messageId of an encoded message."""
    return str(orjson.loads(data)["messageId"])


def stored_ids(database: pathlib.Path) -> list[str]:
    """Every messageId the collector stored, in the order it stored them."""
    db = sqlite3.connect(database)
    try:
        return [row[0] for row in db.execute("SELECT message_id FROM events ORDER BY id")]
    finally:
        db.close()


def refused_url() -> str:
    """A loopback URL where nothing listens: every request is refused, as in an outage."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
