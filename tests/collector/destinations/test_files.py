"""The file kind: NDJSON per UTC hour, the hour being written kept under a `.part` name until
it is over, on disk before delivered, a partial last line left by a crash cut off; one process
writes a path at a time, and another takes over when it dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import destinations, drained, events, post
from trackline.collector import RunningCollector
from trackline.collector.destinations.config import FileSettings
from trackline.collector.destinations.files import FileSender
from trackline.collector.destinations.sender import DELIVERED, HELD
from trackline.collector.store import Job


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def jobs(*numbers: int) -> list[Job]:
    return [
        Job("Files", n, f"m-{n}", orjson.dumps({"messageId": f"m-{n}"}).decode(), 0, 0, None, 1)
        for n in numbers
    ]


def lines(path: Path) -> list[str]:
    return [orjson.loads(line)["messageId"] for line in path.read_text().splitlines()]


def test_events_go_to_the_hours_part_file_then_the_final_name(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 29, 13, 59, tzinfo=UTC))
    sender = FileSender(FileSettings(tmp_path), clock)
    assert sender.send(jobs(1, 2)) == [DELIVERED, DELIVERED]
    part = tmp_path / "2026-11-29" / "13.ndjson.part"
    assert lines(part) == ["m-1", "m-2"]
    assert not (tmp_path / "2026-11-29" / "13.ndjson").exists()
    clock.moment = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
    sender.send(jobs(3))
    assert lines(tmp_path / "2026-11-29" / "13.ndjson") == ["m-1", "m-2"]
    assert not part.exists()
    assert lines(tmp_path / "2026-11-29" / "14.ndjson.part") == ["m-3"]
    sender.close()


def test_an_idle_sender_finishes_the_hour_that_ended(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 29, 23, 30, tzinfo=UTC))
    sender = FileSender(FileSettings(tmp_path), clock)
    sender.send(jobs(1))
    clock.moment = datetime(2026, 11, 30, 0, 5, tzinfo=UTC)
    sender.idle()
    assert lines(tmp_path / "2026-11-29" / "23.ndjson") == ["m-1"]
    sender.close()


def test_a_restart_cuts_a_partial_line_and_finishes_old_hours(tmp_path: Path) -> None:
    folder = tmp_path / "2026-11-29"
    folder.mkdir()
    (folder / "10.ndjson.part").write_bytes(b'{"messageId":"m-1"}\n{"messageId":"m-')
    (folder / "13.ndjson.part").write_bytes(b'{"messageId":"m-7"}\n{"mess')
    clock = Clock(datetime(2026, 11, 29, 13, 10, tzinfo=UTC))
    sender = FileSender(FileSettings(tmp_path), clock)
    assert sender.ready()
    assert lines(folder / "10.ndjson") == ["m-1"]
    sender.send(jobs(8))
    assert lines(folder / "13.ndjson.part") == ["m-7", "m-8"]
    sender.close()


def test_a_write_that_fails_is_retried_not_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "file-in-the-way"
    blocker.write_text("")
    sender = FileSender(FileSettings(blocker / "exports"))
    (result,) = sender.send(jobs(1))
    assert not result.answered
    assert result.error is not None
    sender.close()


def test_the_collector_writes_what_it_routes_to_files(
    start: Callable[..., tuple[RunningCollector, Http]], tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    _, http = start(destinations({"name": "Files", "kind": "file", "path": str(exports)}))
    post(http, events(1, 2) + events(3, integrations={"Files": False}))
    drained(http)
    (part,) = exports.glob("*/*.ndjson.part")
    written = [orjson.loads(line) for line in part.read_text().splitlines()]
    assert [event["messageId"] for event in written] == ["message-1", "message-2"]
    assert all(event["receivedAt"] for event in written)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import orjson
    from trackline.collector.destinations.config import FileSettings
    from trackline.collector.destinations.files import FileSender
    from trackline.collector.store import Job

    sender = FileSender(FileSettings(Path(sys.argv[1])))
    body = orjson.dumps({"messageId": "m-0"}).decode()
    assert sender.ready()
    print(sender.send([Job("Files", 0, "m-0", body, 0, 0, None, 1)])[0].verdict.value, flush=True)
    time.sleep(60)
    """
)


def test_one_process_writes_a_path_and_another_takes_over_when_it_dies(tmp_path: Path) -> None:
    """Another process holds the path: this sender is not ready and writes nothing (its jobs
    are held, unsent). Once that process is killed, this one takes the path over and appends
    to the part file it left."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "delivered"
            sender = FileSender(FileSettings(tmp_path))
            assert not sender.ready()
            assert sender.send(jobs(1)) == [HELD]
            (part,) = tmp_path.glob("*/*.ndjson.part")
            assert lines(part) == ["m-0"]
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
    assert sender.ready()
    assert sender.send(jobs(1)) == [DELIVERED]
    assert lines(part) == ["m-0", "m-1"]
    sender.close()
    again = FileSender(FileSettings(tmp_path))
    assert again.ready()
    again.close()
