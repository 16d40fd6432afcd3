"""`trackline import`: historical import from JSON Lines and CSV, over real HTTP."""

from __future__ import annotations

import io
import json
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.capture import CaptureServer, Reply
from trackline.cli import main

SPEC = pathlib.Path(__file__).parent / "spec"
VALID: dict[str, dict[str, Any]] = json.loads((SPEC / "valid-messages.json").read_text())


def write_jsonl(path: pathlib.Path, messages: list[Any]) -> pathlib.Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    return path


def tracks(count: int, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    """Track messages numbered from `start`; `pad` bytes of padding each make batches small
    (500 KB holds about 24 messages padded with 20,000 bytes)."""
    return [
        {
            "type": "track",
            "userId": f"user-{n % 7}",
            "event": "Imported",
            "properties": {"n": n, "pad": "x" * pad},
            "timestamp": f"2020-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
            "messageId": f"import-{n}",
        }
        for n in range(start, start + count)
    ]


def run_import(capture: CaptureServer, *argv: str) -> int:
    """Run `trackline import ...` against the capture server, without progress output."""
    return main(
        ["import", *argv, "--host", capture.url, "--write-key", "import-key", "--no-progress"]
    )


def test_spec_messages_are_delivered_with_their_ids_and_timestamps(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every type goes out with the messageId and timestamp of its line; exit 0."""
    source = write_jsonl(tmp_path / "spec.jsonl", list(VALID.values()))
    assert run_import(capture, str(source)) == 0
    sent = {m["messageId"]: m for m in capture.delivered()}
    assert len(sent) == len(VALID)
    for original in VALID.values():
        delivered = sent[original["messageId"]]
        assert delivered["timestamp"] == original["timestamp"]
        assert delivered["type"] == original["type"]
    out = capsys.readouterr().out
    assert out.startswith(f"spec.jsonl: {len(VALID)} sent, 0 rejected ({len(VALID)} lines in ")
    assert not (tmp_path / "spec.jsonl.trackline-resume").exists()


def test_bad_lines_are_reported_by_number_and_skipped(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid JSON, a non-object, a bad type and a missing id are named with their line
    numbers; every other line is delivered; the exit status is 1."""
    good = tracks(3)
    source = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(good[0]),
        "{not json",
        "[1, 2]",
        json.dumps({"type": "click", "userId": "u"}),
        "",
        json.dumps(good[1]),
        json.dumps({"type": "track", "event": "No User"}),
        json.dumps(good[2]),
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run_import(capture, str(source)) == 1
    assert sorted(m["messageId"] for m in capture.delivered()) == sorted(
        m["messageId"] for m in good
    )
    out, err = capsys.readouterr()
    assert "mixed.jsonl:2: not valid JSON" in err
    assert "mixed.jsonl:3: not a JSON object but an array" in err
    assert "mixed.jsonl:4: type: must be one of identify" in err
    assert "mixed.jsonl:7: user_id: either user_id or anonymous_id is required" in err
    assert out.splitlines()[0].startswith("mixed.jsonl: 3 sent, 4 rejected (7 lines in ")
    assert "  rejected: user_id: either user_id or anonymous_id is required: line 7" in out


def test_standard_input_is_read_with_a_dash(
    capture: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-` reads JSON Lines from stdin."""
    data = "".join(json.dumps(m) + "\n" for m in tracks(5))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert run_import(capture, "-") == 0
    assert len(capture.delivered()) == 5


def test_resume_refuses_standard_input(capsys: pytest.CaptureFixture[str]) -> None:
    """There is nothing to seek in a pipe: --resume with `-` is a usage error."""
    assert main(["import", "-", "--resume", "--write-key", "k"]) == 2
    assert "standard input cannot be read again" in capsys.readouterr().err


def test_a_missing_file_is_a_usage_error_before_anything_is_sent(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All inputs are checked first: one missing file stops the command with status 2."""
    source = write_jsonl(tmp_path / "ok.jsonl", tracks(2))
    assert run_import(capture, str(source), str(tmp_path / "missing.jsonl")) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert capture.requests == []


def test_several_files_are_imported_in_turn(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each file gets its own summary line; all their messages are delivered."""
    first = write_jsonl(tmp_path / "a.jsonl", tracks(3))
    second = write_jsonl(tmp_path / "b.jsonl", tracks(4, start=3))
    assert run_import(capture, str(first), str(second)) == 0
    assert len(capture.delivered()) == 7
    out = capsys.readouterr().out
    assert "a.jsonl: 3 sent" in out
    assert "b.jsonl: 4 sent" in out


def test_messages_without_an_id_get_the_same_id_on_every_run(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """A line without messageId gets an id derived from the line, so a second import of the
    same file resends the same ids (which a deduplicating server stores once)."""
    messages = [
        {"type": "track", "userId": "u", "event": "E", "properties": {"n": n}} for n in range(3)
    ]
    source = write_jsonl(tmp_path / "noids.jsonl", messages)
    assert run_import(capture, str(source)) == 0
    assert run_import(capture, str(source)) == 0
    ids = [m["messageId"] for m in capture.delivered()]
    assert len(set(ids)) == 3
    assert ids[:3] == ids[3:]


def test_messages_refused_by_the_server_are_rejected_with_the_reason(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 400 answer settles its lines as rejected (not resent on resume); exit 1."""
    capture.default = Reply(400, body=b'{"code":"invalid","message":"no thanks"}')
    source = write_jsonl(tmp_path / "refused.jsonl", tracks(3))
    assert run_import(capture, str(source)) == 1
    out = capsys.readouterr().out
    assert "refused.jsonl: 0 sent, 3 rejected" in out
    assert "rejected: rejected (HTTP 400): refused by the server" in out
    assert "lines 1, 2, 3" in out
    assert not (tmp_path / "refused.jsonl.trackline-resume").exists()


def test_per_message_rejections_in_a_200_answer_are_counted(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collector that accepts a batch but rejects one message: that line is rejected."""
    capture.script(Reply(200, body=b'{"success":true,"rejected":[{"index":1,"reason":"x"}]}'))
    source = write_jsonl(tmp_path / "partial.jsonl", tracks(3))
    assert run_import(capture, str(source), "--workers", "1") == 1
    out = capsys.readouterr().out
    assert "partial.jsonl: 2 sent, 1 rejected" in out
    assert ": line 2" in out


def test_dry_run_validates_and_sends_nothing(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run reports valid and rejected lines, sends nothing, needs no write key and
    writes no resume state."""
    source = tmp_path / "dry.jsonl"
    source.write_text(
        json.dumps(tracks(1)[0]) + "\n" + json.dumps({"type": "track", "userId": "u"}) + "\n",
        encoding="utf-8",
    )
    assert main(["import", str(source), "--dry-run", "--host", capture.url, "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "dry.jsonl: 1 valid, 1 rejected" in out
    assert "dry run, nothing was sent" in out
    assert "dry.jsonl:2: event: track requires a non-empty event name" in err
    assert capture.requests == []
    assert not (tmp_path / "dry.jsonl.trackline-resume").exists()


def test_csv_rows_become_messages_through_the_column_mapping(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """Columns named like fields map themselves, --map renames and converts, and the other
    columns become properties."""
    source = tmp_path / "orders.csv"
    source.write_text(
        "user_id,event,timestamp,amount,coupon,shipping\n"
        "u1,Order Completed,2019-03-01T10:00:00Z,39.95,true,2-day\n"
        'u2,Order Completed,2019-03-02T11:30:00Z,12,false,"next day, early"\n',
        encoding="utf-8",
    )
    argv = ["--type", "track", "--map", "properties.revenue=amount:number"]
    assert run_import(capture, str(source), *argv, "--map", "properties.coupon=coupon:bool") == 0
    first, second = sorted(capture.delivered(), key=lambda m: m["userId"])
    assert first["event"] == "Order Completed"
    assert first["timestamp"] == "2019-03-01T10:00:00.000Z"
    assert first["properties"] == {"revenue": 39.95, "coupon": True, "shipping": "2-day"}
    assert second["properties"] == {"revenue": 12, "coupon": False, "shipping": "next day, early"}


def test_csv_identify_rows_put_other_columns_in_traits(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """A type column chooses each row's type; extra columns go to traits for identify."""
    source = tmp_path / "people.csv"
    source.write_text("type,userId,email,plan\nidentify,u1,u1@example.com,pro\n", encoding="utf-8")
    assert run_import(capture, str(source), "--only-mapped", "--map", "traits.email=email") == 0
    (message,) = capture.delivered()
    assert message["traits"] == {"email": "u1@example.com"}


@pytest.mark.parametrize(
    ("argv", "content", "message"),
    [
        ([], "userId,event\nu,E\n", "the CSV has no type column"),
        (["--type", "track", "--map", "properties.x=nope"], "userId,event\nu,E\n", "'nope'"),
        (
            ["--type", "track", "--map", "revenue=amount"],
            "userId,event\nu,E\n",
            "not a message field",
        ),
    ],
)
def test_csv_mapping_mistakes_are_usage_errors(
    capture: CaptureServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    content: str,
    message: str,
) -> None:
    """A mapping that does not fit the header is explained, and nothing is sent."""
    source = tmp_path / "bad.csv"
    source.write_text(content, encoding="utf-8")
    assert run_import(capture, str(source), *argv) == 2
    assert message in capsys.readouterr().err
    assert capture.requests == []


def test_a_cell_that_cannot_be_converted_rejects_its_row(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad number rejects that row, named by line and column; the rest is sent."""
    source = tmp_path / "amounts.csv"
    source.write_text("userId,event,amount\nu,E,12\nu,E,twelve\n", encoding="utf-8")
    argv = ["--type", "track", "--map", "properties.amount=amount:number"]
    assert run_import(capture, str(source), *argv) == 1
    assert "amounts.csv:3: properties.amount: 'twelve' is not a number" in capsys.readouterr().err
    assert len(capture.delivered()) == 1


def test_an_outage_saves_the_resume_point_and_resume_sends_the_rest(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server accepts one request, then fails: the first run exits 1 with the resume point
    at the last line of that request; `--resume` then sends only the lines after it, and
    between the two runs every line is delivered."""
    source = write_jsonl(tmp_path / "big.jsonl", tracks(100, pad=20_000))
    capture.script(Reply(200))
    capture.default = Reply(503)
    argv = ["--workers", "1", "--delivery-timeout", "0.3"]
    assert run_import(capture, str(source), *argv) == 1
    first_run = capture.delivered_ids()
    assert 0 < len(first_run) < 100
    out = capsys.readouterr().out
    assert "not delivered: " in out
    assert f"settled up to line {len(first_run)}; continue with: --resume {source}" in out
    state = json.loads((tmp_path / "big.jsonl.trackline-resume").read_text())
    assert state["line"] == len(first_run)

    capture.default = Reply(200)
    before = len(capture.requests)
    assert run_import(capture, str(source), "--resume") == 0
    resent = [m["messageId"] for r in capture.requests[before:] for m in r.batch]
    assert sorted(resent) == sorted(f"import-{n}" for n in range(len(first_run), 100))
    assert "big.jsonl: resuming after line" in capsys.readouterr().err
    assert not (tmp_path / "big.jsonl.trackline-resume").exists()


def test_resume_without_saved_state_starts_at_the_beginning(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """--resume on a file never imported (or completed) imports all of it."""
    source = write_jsonl(tmp_path / "fresh.jsonl", tracks(4))
    assert run_import(capture, str(source), "--resume") == 0
    assert len(capture.delivered()) == 4


def test_resume_refuses_a_file_that_changed(
    capture: CaptureServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """If the lines before the resume point are not the ones imported, resuming would skip
    the wrong lines: it is refused with a way out."""
    source = write_jsonl(tmp_path / "changed.jsonl", tracks(100, pad=20_000))
    capture.script(Reply(200))
    capture.default = Reply(503)
    assert run_import(capture, str(source), "--workers", "1", "--delivery-timeout", "0.3") == 1
    write_jsonl(source, tracks(100, start=1000))
    capture.default = Reply(200)
    assert run_import(capture, str(source), "--resume") == 2
    err = capsys.readouterr().err
    assert "changed since the interrupted import" in err
    assert "changed.jsonl.trackline-resume to import it from the start" in err


def test_state_dir_keeps_resume_state_away_from_the_input(
    capture: CaptureServer, tmp_path: pathlib.Path
) -> None:
    """With --state-dir the state file goes there, and --resume finds it there."""
    source = write_jsonl(tmp_path / "data.jsonl", tracks(100, pad=20_000))
    states = tmp_path / "states"
    states.mkdir()
    capture.script(Reply(200))
    capture.default = Reply(503)
    argv = ["--state-dir", str(states), "--workers", "1"]
    assert run_import(capture, str(source), *argv, "--delivery-timeout", "0.3") == 1
    assert len(list(states.iterdir())) == 1
    assert not (tmp_path / "data.jsonl.trackline-resume").exists()
    capture.default = Reply(200)
    assert run_import(capture, str(source), *argv, "--resume") == 0
    assert sorted(set(capture.delivered_ids())) == sorted(f"import-{n}" for n in range(100))
    assert list(states.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_import_exits_130_and_resumes_where_it_stopped(
    capture: CaptureServer, tmp_path: pathlib.Path, signum: int
) -> None:
    """Ctrl-C or SIGTERM while the server stalls: the command stops within its grace period,
    exits 130 and saves the resume point after the lines confirmed delivered; `--resume`
    then delivers the rest."""
    source = write_jsonl(tmp_path / "stalled.jsonl", tracks(100, pad=20_000))
    capture.script(Reply(200))
    capture.default = Reply(action="hang")
    command = [sys.executable, "-m", "trackline", "import", str(source), "--workers", "1"]
    process = subprocess.Popen(
        [*command, "--host", capture.url, "--write-key", "k"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    capture.wait_for_requests(2)
    started = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 10
    delivered_first = capture.delivered_ids()
    state = json.loads((tmp_path / "stalled.jsonl.trackline-resume").read_text())
    assert state["line"] == len(delivered_first)
    assert "continue with: --resume" in out

    capture.default = Reply(200)
    assert run_import(capture, str(source), "--resume") == 0
    assert set(capture.delivered_ids()) == {f"import-{n}" for n in range(100)}
