"""`trackline events --all`: every event a collector stored, oldest first, with flat memory;
and the round trip: out of one collector with `--all --json`, into another with
`trackline import`, the same messages."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import urllib3

from trackline.cli import main
from trackline.collector import RunningCollector, serve
from trackline.collector.ingest import Envelope, process
from trackline.collector.store import SQLiteStore

#: What a collector sets on arrival: a copy's own, not the original's. (A copy's
#: `originalTimestamp` is the original's `timestamp`, which arrives already corrected.)
ARRIVAL_FIELDS = ("receivedAt", "sentAt", "originalTimestamp")


def varied(n: int) -> dict[str, Any]:
    """Message `n`: each type in turn, with what an export must carry over unchanged: another
    library's context, integrations, fields no client call knows, text beyond ASCII."""
    common: dict[str, Any] = {
        "messageId": f"m-{n:07d}",
        "timestamp": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00.{n % 1000:03d}Z",
        "context": {"library": {"name": "analytics-ruby", "version": "2.4.1"}, "n": n},
        "integrations": {"All": False, "Webhook": n % 2 == 0},
        "channel": "server",
    }
    kind = ("track", "identify", "page", "screen", "group", "alias")[n % 6]
    user = f"user-{n % 97}"
    if kind == "track":
        return {
            **common,
            "type": kind,
            "userId": user,
            "event": "Ordered ✓",
            "properties": {"revenue": n / 7, "items": [n, "ü"], "nested": {"a": None}},
        }
    if kind == "identify":
        return {**common, "type": kind, "anonymousId": f"anon-{n}", "traits": {"plan": "pro"}}
    if kind in ("page", "screen"):
        return {
            **common,
            "type": kind,
            "userId": user,
            "name": "Home",
            "category": "Docs",
            "properties": {"path": f"/p/{n}"},
        }
    if kind == "group":
        return {
            **common,
            "type": kind,
            "userId": user,
            "groupId": f"g-{n % 5}",
            "traits": {"name": "Initech"},
        }
    return {**common, "type": kind, "userId": user, "previousId": f"anon-{n}"}


def post_all(url: str, count: int) -> None:
    """Post `count` varied messages in batches whose `sentAt` says the sender's clock is 90 s
    behind, so each stored `timestamp` differs from its `originalTimestamp`."""
    pool = urllib3.PoolManager(retries=False, timeout=30.0)
    sent_at = (datetime.now(UTC) - dt.timedelta(seconds=90)).isoformat().replace("+00:00", "Z")
    for start in range(0, count, 500):
        batch = [varied(n) for n in range(start, min(count, start + 500))]
        body = orjson.dumps({"batch": batch, "sentAt": sent_at})
        headers = {"Content-Type": "application/json", "Authorization": "Basic a2V5LWE6"}
        answer = pool.request("POST", url + "/v1/batch", body=body, headers=headers)
        assert answer.status == 200, answer.data


def export_to(url: str, path: pathlib.Path, *argv: str) -> None:
    """`trackline events --all --json > path` in a process of its own, as a shell runs it."""
    code = (
        "import sys; from trackline.cli import main; "
        f"sys.exit(main(['events', '--host', {url!r}, '--all', '--json', *{list(argv)!r}]))"
    )
    with path.open("wb") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, check=True, timeout=600)


def stored(url: str) -> Iterator[dict[str, Any]]:
    """Every stored message, oldest first, read line by line from the export."""
    pool = urllib3.PoolManager(retries=False, timeout=60.0)
    response = pool.request(
        "GET", url + "/api/events?format=ndjson&order=asc", preload_content=False
    )
    assert response.status == 200
    pending = b""
    for chunk in response.stream(1 << 20):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield orjson.loads(line)


def without_arrival(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key not in ARRIVAL_FIELDS}


def import_into(copy: RunningCollector, path: pathlib.Path) -> None:
    argv = ["import", str(path), "--host", copy.url, "--write-key", "key-b", "--no-progress"]
    assert main(argv) == 0


def test_events_all_json_round_trips_into_another_collector(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """20,000 events out of one collector (`--all --json`, oldest first, exactly as stored)
    and into a second (`trackline import`): the same messages, every field but those a
    collector sets on arrival; `timestamp` included (no skew correction a second time)."""
    count = 20_000
    with serve(tmp_path / "a.sqlite3") as original, serve(tmp_path / "b.sqlite3") as copy:
        post_all(original.url, count)
        dump = tmp_path / "all.jsonl"
        export_to(original.url, dump)
        lines = dump.read_bytes().splitlines()
        assert len(lines) == count
        first = orjson.loads(lines[0])
        assert first["messageId"] == "m-0000000"
        assert first["timestamp"] != first["originalTimestamp"]  # corrected on arrival
        assert [orjson.loads(line)["messageId"] for line in lines] == [
            f"m-{n:07d}" for n in range(count)
        ]
        import_into(copy, dump)
        assert f"{count:,} sent, 0 rejected" in capsys.readouterr().out
        before = {m["messageId"]: without_arrival(m) for m in stored(original.url)}
        after = {m["messageId"]: without_arrival(m) for m in stored(copy.url)}
        assert len(after) == count
        assert after == before
        copied = next(stored(copy.url))
        assert copied["originalTimestamp"] == first["timestamp"]
        stats = urllib3.request("GET", copy.url + "/api/stats").json()
        assert (
            stats["by_type"]
            == urllib3.request("GET", original.url + "/api/stats").json()["by_type"]
        )


def test_events_all_lists_every_match_as_a_table_and_checks_its_options(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(tmp_path / "a.sqlite3") as running:
        post_all(running.url, 60)
        assert main(["events", "--host", running.url, "--all", "--type", "alias"]) == 0
        rows = capsys.readouterr().out.splitlines()
        assert rows[0].split()[:4] == ["TIME", "(UTC)", "TYPE", "USER"]
        assert [row.split()[2] for row in rows[1:]] == ["alias"] * 10
        assert main(["events", "--host", running.url, "--all", "--json", "--user-id", "x"]) == 0
        assert capsys.readouterr().out == ""
        for extra in (["--follow"], ["--limit", "5"]):
            assert main(["events", "--host", running.url, "--all", *extra]) == 2
            assert "--all lists every event" in capsys.readouterr().err
        assert main(["events", "--host", running.url, "--all", "--since", "soon"]) == 2


def test_events_all_asks_with_the_read_token(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "read-token-for-tests-0123456789"
    with serve(tmp_path / "a.sqlite3", read_token=token) as running:
        post_all(running.url, 3)
        assert main(["events", "--host", running.url, "--all", "--json"]) == 1
        assert "401" in capsys.readouterr().err
        argv = ["events", "--host", running.url, "--all", "--json", "--read-token", token]
        assert main(argv) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3


def digest(messages: Iterator[dict[str, Any]]) -> tuple[int, int]:
    """(count, a sum of hashes): equal for the same messages in any order, in flat memory."""
    count = total = 0
    for message in messages:
        body = orjson.dumps(without_arrival(message), option=orjson.OPT_SORT_KEYS)
        total = (total + int.from_bytes(hashlib.sha256(body).digest()[:16])) % (1 << 128)
        count += 1
    return count, total


@pytest.mark.slow
def test_a_million_events_round_trip(tmp_path: pathlib.Path) -> None:
    """A million events out (`--all --json`) and in (`trackline import`): the same messages.
    About three minutes on two cores."""
    count = 1_000_000
    with SQLiteStore(tmp_path / "a.sqlite3") as store:
        received = datetime.now(UTC)
        for start in range(0, count, 5000):
            envelope = Envelope([varied(n) for n in range(start, min(count, start + 5000))])
            store.write(process(envelope, source="key-a", received_at=received).rows)
    with serve(tmp_path / "a.sqlite3") as original, serve(tmp_path / "b.sqlite3") as copy:
        dump = tmp_path / "all.jsonl"
        started = time.monotonic()
        export_to(original.url, dump)
        exported = time.monotonic()
        import_into(copy, dump)
        imported = time.monotonic()
        print(f"export {exported - started:.1f} s, import {imported - exported:.1f} s")
        with dump.open("rb") as lines:
            written = digest(orjson.loads(line) for line in lines)
        assert written[0] == count
        assert digest(stored(original.url)) == written
        assert digest(stored(copy.url)) == written
