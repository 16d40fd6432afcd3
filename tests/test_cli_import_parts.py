"""The parts of `trackline import`: the readers, the ledger, the resume state, the progress."""

from __future__ import annotations

import io
import pathlib

import pytest

from trackline.cli._import_ledger import Ledger, StateFile
from trackline.cli._import_read import CsvMapping, Line, read_csv, read_jsonl
from trackline.cli._progress import Progress, format_duration
from trackline.errors import DeliveryError
from trackline.stats import DropReason

# -- readers ---------------------------------------------------------------------------------


def test_jsonl_lines_carry_their_number_and_end_offset() -> None:
    """Offsets point just after each line, blank lines are skipped but counted."""
    data = b'{"type":"track"}\n\n{"type":"identify"}\n'
    lines = list(read_jsonl(io.BytesIO(data)))
    assert [(line.number, line.end) for line in lines] == [(1, 17), (3, len(data))]


def test_jsonl_reading_resumes_from_an_offset() -> None:
    """Seeking to a saved offset and passing the line count continues the numbering."""
    data = b'{"n":1}\n{"n":2}\n{"n":3}\n'
    stream = io.BytesIO(data)
    stream.seek(8)
    lines = list(read_jsonl(stream, line=1, offset=8))
    assert [(line.number, line.message and line.message["n"]) for line in lines] == [
        (2, 2),
        (3, 3),
    ]


def test_a_line_without_message_id_gets_a_stable_one() -> None:
    """The same line at the same number always gets the same id; another line another."""
    data = b'{"type":"track"}\n{"type":"track"}\n'
    first = [line.message["messageId"] for line in read_jsonl(io.BytesIO(data)) if line.message]
    again = [line.message["messageId"] for line in read_jsonl(io.BytesIO(data)) if line.message]
    assert first == again
    assert first[0] != first[1]


def test_csv_quoted_fields_may_span_lines() -> None:
    """A record over two physical lines starts and ends where it does; the next record's
    number is its own first line."""
    data = b'userId,note\nu1,"two\nlines"\nu2,one\n'
    mapping = CsvMapping("identify", [])
    lines = list(read_csv(io.BytesIO(data), mapping))
    assert [(line.number, line.last) for line in lines] == [(2, 3), (4, 4)]
    assert lines[0].message is not None
    assert lines[0].message["traits"] == {"note": "two\nlines"}
    assert lines[-1].end == len(data)


def test_csv_reading_resumes_after_the_header() -> None:
    """Resuming reads the header for the mapping, then continues at the saved offset."""
    data = b"userId,event\nu1,A\nu2,B\nu3,C\n"
    mapping = CsvMapping("track", [])
    first_two = list(read_csv(io.BytesIO(data), mapping))[:2]
    resumed = list(read_csv(io.BytesIO(data), mapping, first_two[-1].last, first_two[-1].end))
    assert [(line.number, line.message and line.message["event"]) for line in resumed] == [(4, "C")]


def test_csv_byte_order_mark_is_ignored() -> None:
    """Spreadsheet exports often start with a BOM; the first column name stays clean."""
    lines = list(read_csv(io.BytesIO(b"\xef\xbb\xbfuserId,event\nu,E\n"), CsvMapping("track", [])))
    assert lines[0].message is not None
    assert lines[0].message["userId"] == "u"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("revenue", "expected FIELD=COLUMN"),
        ("=amount", "expected FIELD=COLUMN"),
        ("revenue=amount", "'revenue' is not a message field"),
        ("properties.=amount", "is not a message field"),
    ],
)
def test_bad_map_specs_are_explained(spec: str, problem: str) -> None:
    """A --map that cannot be understood names itself and the expected form."""
    with pytest.raises(ValueError, match=problem):
        CsvMapping("track", [spec])


# -- ledger ----------------------------------------------------------------------------------


def line(number: int) -> Line:
    return Line(number, number, number * 10)


def test_the_watermark_advances_only_over_a_settled_prefix() -> None:
    """Lines settled out of order move the watermark only once the gap before them closes."""
    ledger = Ledger()
    for n in (1, 2, 3):
        ledger.expect(line(n), f"m{n}")
    ledger.delivered([{"messageId": "m2"}, {"messageId": "m3"}])
    assert ledger.watermark == (0, 0)
    ledger.delivered([{"messageId": "m1"}])
    assert ledger.watermark == (3, 30)
    assert ledger.sent == 3
    assert ledger.pending == 0


def test_a_final_rejection_lets_the_watermark_pass() -> None:
    """A line the server rejected will never be accepted: resuming must not resend it."""
    ledger = Ledger()
    ledger.expect(line(1), "m1")
    ledger.expect(line(2), "m2")
    ledger.dropped(DeliveryError(DropReason.REJECTED, "bad", 400), [{"messageId": "m1"}])
    ledger.delivered([{"messageId": "m2"}])
    assert ledger.watermark == (2, 20)
    assert ledger.rejected.total == 1
    assert ledger.failed.total == 0


def test_a_transient_failure_stops_the_watermark_for_the_rest_of_the_run() -> None:
    """After an outage drop, later deliveries do not move the resume point past the gap."""
    ledger = Ledger()
    for n in (1, 2, 3, 4):
        ledger.expect(line(n), f"m{n}")
    ledger.delivered([{"messageId": "m1"}])
    timeout = DeliveryError(DropReason.DELIVERY_TIMEOUT, "slow")
    ledger.dropped(timeout, [{"messageId": "m2"}])
    ledger.delivered([{"messageId": "m3"}, {"messageId": "m4"}])
    assert ledger.watermark == (1, 10)
    assert ledger.failed.by_reason == {str(timeout): (1, [2])}
    assert ledger.sent == 3


def test_invalid_lines_are_settled_in_order() -> None:
    """A bad line between sent ones does not hold the watermark back."""
    ledger = Ledger()
    ledger.expect(line(1), "m1")
    ledger.invalid(line(2), "not valid JSON")
    ledger.expect(line(3), "m3")
    ledger.refused("m3", "event: required")
    ledger.delivered([{"messageId": "m1"}])
    assert ledger.watermark == (3, 30)
    assert ledger.rejected.total == 2


def test_a_message_id_repeated_in_the_input_settles_each_line_once() -> None:
    """Two lines with the same messageId are two lines: each delivery settles one."""
    ledger = Ledger()
    ledger.expect(line(1), "same")
    ledger.expect(line(2), "same")
    ledger.delivered([{"messageId": "same"}])
    ledger.delivered([{"messageId": "same"}])
    assert ledger.watermark == (2, 20)
    ledger.delivered([{"messageId": "same"}, {"messageId": "unknown"}])
    assert ledger.sent == 2


def test_the_tally_keeps_counts_and_the_first_line_numbers() -> None:
    """Many lines with one reason: every one counted, the first twenty listed."""
    ledger = Ledger()
    for n in range(1, 101):
        ledger.invalid(line(n), "not valid JSON")
    count, numbers = ledger.rejected.by_reason["not valid JSON"]
    assert count == 100
    assert numbers == list(range(1, 21))


# -- resume state ----------------------------------------------------------------------------


def test_state_round_trips_and_checks_the_input(tmp_path: pathlib.Path) -> None:
    """A saved point loads back while the input's start is unchanged, and is refused after."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"a\nb\nc\n")
    state = StateFile(source)
    assert state.load() is None
    state.save(2, 4)
    point = state.load()
    assert point is not None
    assert (point.line, point.offset) == (2, 4)
    source.write_bytes(b"a\nB\nc\n")
    with pytest.raises(ValueError, match="changed since the interrupted import"):
        state.load()
    state.remove()
    assert state.load() is None


def test_state_survives_appending_to_the_input(tmp_path: pathlib.Path) -> None:
    """A log that grew since is still the same input: resuming continues."""
    source = tmp_path / "log.jsonl"
    source.write_bytes(b"a\nb\n")
    StateFile(source).save(2, 4)
    source.write_bytes(b"a\nb\nc\n")
    assert StateFile(source).load() is not None


def test_a_truncated_input_is_refused(tmp_path: pathlib.Path) -> None:
    """A file shorter than the resume offset cannot be the one that was imported."""
    source = tmp_path / "short.jsonl"
    source.write_bytes(b"a\nb\n")
    StateFile(source).save(2, 4)
    source.write_bytes(b"a\n")
    with pytest.raises(ValueError, match="changed"):
        StateFile(source).load()


def test_a_corrupt_state_file_is_reported(tmp_path: pathlib.Path) -> None:
    """A state file that is not what we wrote is named in the error."""
    source = tmp_path / "x.jsonl"
    source.write_bytes(b"a\n")
    state = StateFile(source)
    state.path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read the resume state"):
        state.load()


# -- progress --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    """On a TTY: carriage return, a bar, percentage, rate and ETA, cleared to the line end."""
    out = io.StringIO()
    clock = FakeClock()
    progress = Progress(out, "in.jsonl", total_bytes=1000, tty=True, interval=5, clock=clock)
    clock.now += 2
    progress.update(250, line=50, sent=40, rejected=1)
    text = out.getvalue()
    assert text.startswith("\rin.jsonl  [######..................]   25%  line 50  sent 40")
    assert "rejected 1  20 events/s  ETA 0:06" in text
    assert text.endswith("\x1b[K")
    progress.close()
    assert out.getvalue().endswith("\n")


def test_plain_output_gets_a_line_per_interval() -> None:
    """Not a TTY: one full line every `interval` seconds, nothing in between, and no final
    line (the summary follows)."""
    out = io.StringIO()
    clock = FakeClock()
    progress = Progress(out, "-", total_bytes=None, tty=False, interval=5, clock=clock)
    for _ in range(3):
        clock.now += 2
        progress.update(10, line=1, sent=1, rejected=0)
    progress.update(10, line=2, sent=2, rejected=0, final=True)
    assert out.getvalue() == "-  line 1  sent 1  0 events/s\n"


def test_notes_clear_the_bar_first() -> None:
    """A bad-line report printed while the bar shows starts on a clean line."""
    out = io.StringIO()
    clock = FakeClock()
    progress = Progress(out, "f", total_bytes=10, tty=True, interval=5, clock=clock)
    clock.now += 1
    progress.update(1, line=1, sent=0, rejected=0)
    progress.note("f:2: not valid JSON")
    assert out.getvalue().endswith("\r\x1b[Kf:2: not valid JSON\n")


def test_disabled_progress_prints_only_notes() -> None:
    """--no-progress: updates print nothing, bad lines are still reported."""
    out = io.StringIO()
    progress = Progress(out, "f", total_bytes=10, tty=False, interval=5, enabled=False)
    progress.update(5, line=1, sent=1, rejected=0, final=True)
    progress.note("f:1: bad")
    assert out.getvalue() == "f:1: bad\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(7.4, "0:07"), (750, "12:30"), (3723, "1:02:03"), (0, "0:00")]
)
def test_durations_read_like_clocks(seconds: float, text: str) -> None:
    """ETA and elapsed times: minutes:seconds, with hours when needed."""
    assert format_duration(seconds) == text
