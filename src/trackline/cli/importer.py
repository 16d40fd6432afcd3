"""`trackline import FILE...`: historical import of JSON Lines or CSV files through a client.

Each line is replayed through an ordinary batching `Client` with its own `messageId` and
`timestamp`. Bad lines are reported with their number and skipped. Progress shows on stderr (a
bar on a terminal, periodic lines otherwise), a summary on stdout at the end. The resume state
beside each file records the last line up to which everything is settled for good, so
`--resume` after an interruption (Ctrl-C, SIGTERM, a crash, an outage) continues from there.

Exit status: 0 every line delivered, 1 some line rejected or not delivered, 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Final

import orjson

from trackline.cli._common import (
    EXIT_NOT_DELIVERED,
    EXIT_OK,
    EXIT_USAGE,
    add_destination_options,
    describe_config_error,
    fail,
    positive_seconds,
)
from trackline.cli._import_ledger import Ledger, ResumePoint, StateFile, Tally
from trackline.cli._import_read import CONVERSIONS, CsvMapping, Line, read_csv, read_jsonl
from trackline.cli._progress import Progress, format_duration
from trackline.client import Client
from trackline.config import default, resolve_host, resolve_write_key
from trackline.errors import ConfigError, MessageError
from trackline.replay import replay
from trackline.transport import RelayTransport
from trackline.wire import HOP_FIELDS, TYPES_IN_ORDER

EXIT_INTERRUPTED: Final = 130
#: Bad lines reported one by one as they are met; the summary counts the rest.
LINES_REPORTED: Final = 20
#: Lines read between two looks at the progress and the resume state: a look costs about as
#: much as sending a line, and neither changes faster than a few times a second.
LINES_PER_CHECK: Final = 256
#: Seconds between saves of the resume state.
SAVE_INTERVAL: Final = 0.5
#: After an interruption, how long the messages already queued may take to be delivered.
INTERRUPT_GRACE: Final = 2.0
#: A line with this field is a message a collector stored (`trackline events --all --json`):
#: it is sent on as it is, not rebuilt through a client call (see `stored_form`).
STORED_MARK: Final = "receivedAt"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `trackline import` to the command line."""
    parser = subparsers.add_parser(
        "import",
        help="import historical events from JSON Lines or CSV files",
        description="Send the messages of JSON Lines files (Tracking API messages, one per "
        "line) or CSV files, keeping each one's timestamp and messageId.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for stdin")
    add_destination_options(parser)
    parser.add_argument(
        "--format", choices=("jsonl", "csv"), help="default: csv for *.csv files, else jsonl"
    )
    parser.add_argument(
        "--type", choices=TYPES_IN_ORDER, help="CSV: the type of rows without a type column"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV: fill FIELD (userId, event, timestamp, properties.KEY, traits.KEY, "
        f"context.KEY...) from COLUMN; add :{'/:'.join(CONVERSIONS[1:])} to convert the text. "
        "Columns named like a field (userId or user_id, event...) map themselves",
    )
    parser.add_argument(
        "--only-mapped",
        action="store_true",
        help="CSV: ignore other columns (by default they become properties or traits)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue after the last line settled last time"
    )
    parser.add_argument(
        "--state-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="keep resume state here instead of beside each file",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    parser.add_argument(
        "--delivery-timeout",
        type=positive_seconds,
        default=300.0,
        metavar="SECONDS",
        help="give up on a batch after this long, retries included (default: 300)",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel requests (default: 2)")
    parser.add_argument(
        "--progress-interval",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal (default: 5)",
    )
    parser.add_argument("--no-progress", action="store_true", help="show no progress")
    parser.set_defaults(run=run)


@dataclasses.dataclass
class _Run:
    """What one input's import did, for the summary and the exit status."""

    label: str
    ledger: Ledger
    records: int = 0
    start_bytes: int = 0
    read_line: int = 0
    read_bytes: int = 0
    interrupted: bool = False
    seconds: float = 0.0


class _Interrupted(Exception):
    """SIGTERM, handled like Ctrl-C."""


def run(args: argparse.Namespace) -> int:
    """Import every file in turn; returns the exit status."""
    try:
        mapping = CsvMapping(args.type, args.map, only_mapped=args.only_mapped)
        sources = [_check_source(name, args) for name in args.files]
    except ValueError as exc:
        return fail("import", str(exc), EXIT_USAGE)
    # The callbacks settle lines in the ledger of the input being imported.
    current = [Ledger()]
    try:
        write_key = resolve_write_key(args.write_key or ("dry-run" if args.dry_run else None))
        host = resolve_host(args.host)
        client = Client(
            write_key,
            host=host,
            # No `sentAt`: each event's time is the file's, not corrected by this machine's
            # clock (see RelayTransport), so a collector's export imported elsewhere keeps it.
            transport=RelayTransport(
                host,
                write_key,
                timeout=default("timeout"),
                gzip=default("gzip"),
                connections=max(1, args.workers),
            ),
            send=not args.dry_run,
            queue_full="block",
            block_timeout=args.delivery_timeout,
            delivery_timeout=args.delivery_timeout,
            workers=args.workers,
            on_success=lambda messages: current[0].delivered(messages),
            on_error=lambda error, messages: current[0].dropped(error, messages),
        )
    except ConfigError as exc:
        return fail("import", describe_config_error(exc), EXIT_USAGE)
    status = EXIT_OK
    interrupted = False
    try:
        with _sigterm_as_interrupt():
            for source in sources:
                try:
                    outcome = _import_one(source, args, mapping, client, current)
                except ValueError as exc:
                    status = max(status, fail("import", f"{source}: {exc}", EXIT_USAGE))
                    continue
                status = max(status, _summarise(outcome, args, source))
                if outcome.interrupted:
                    interrupted = True
                    return EXIT_INTERRUPTED
    finally:
        # After an interruption the grace period has passed: what is left is dropped now.
        client.shutdown(timeout=0.0 if interrupted else None)
    return status


def _check_source(name: str, args: argparse.Namespace) -> str:
    if name == "-":
        if args.resume:
            raise ValueError("--resume needs files: standard input cannot be read again")
        return name
    path = pathlib.Path(name)
    if not path.is_file():
        raise ValueError(f"{name}: no such file")
    return name


def _import_one(
    source: str,
    args: argparse.Namespace,
    mapping: CsvMapping,
    client: Client,
    current: list[Ledger],
) -> _Run:
    path = None if source == "-" else pathlib.Path(source)
    state = None if path is None or args.dry_run else StateFile(path, args.state_dir)
    start = ResumePoint(0, 0)
    if args.resume and state is not None:
        start = state.load() or start
    ledger = Ledger(start.line, start.offset)
    current[0] = ledger
    outcome = _Run(path.name if path else "<stdin>", ledger)
    size = path.stat().st_size if path is not None else None
    progress = Progress(
        sys.stderr,
        outcome.label,
        total_bytes=size,
        start_bytes=start.offset,
        tty=sys.stderr.isatty(),
        interval=args.progress_interval,
        enabled=not args.no_progress,
    )
    outcome.start_bytes = outcome.read_bytes = start.offset
    outcome.read_line = start.line
    if start.line:
        progress.note(f"{outcome.label}: resuming after line {start.line:,}")
    started = time.monotonic()
    with _open(path) as stream:
        csv_input = args.format == "csv" or (args.format is None and source.endswith(".csv"))
        if csv_input:
            lines = read_csv(stream, mapping, start.line, start.offset)
        else:
            if start.offset:
                stream.seek(start.offset)
            lines = read_jsonl(stream, start.line, start.offset)
        try:
            _send_lines(lines, args.dry_run, client, ledger, state, progress, outcome)
            _wait_until_settled(client, outcome, progress, None)
        except (KeyboardInterrupt, _Interrupted):
            outcome.interrupted = True
            with contextlib.suppress(KeyboardInterrupt, _Interrupted):
                _wait_until_settled(client, outcome, progress, INTERRUPT_GRACE)
    outcome.seconds = time.monotonic() - started
    _show(progress, outcome, final=True)
    progress.close()
    if state is not None:
        if ledger.failed.total or ledger.pending or outcome.interrupted:
            state.save(*ledger.watermark)
        else:
            state.remove()
    return outcome


def _send_lines(
    lines: Iterator[Line],
    dry_run: bool,
    client: Client,
    ledger: Ledger,
    state: StateFile | None,
    progress: Progress,
    outcome: _Run,
) -> None:
    """Hand every line to the client (or only validate it), keeping the ledger and the resume
    state up to date."""
    saved = ledger.watermark
    next_save = time.monotonic() + SAVE_INTERVAL
    for line in lines:
        outcome.records += 1
        outcome.read_line, outcome.read_bytes = line.last, line.end
        problem = _send_line(line, dry_run, client, ledger)
        if problem is not None:
            if ledger.rejected.total <= LINES_REPORTED:
                progress.note(f"{outcome.label}:{line.number}: {problem}")
            if ledger.rejected.total == LINES_REPORTED:
                progress.note(f"{outcome.label}: further bad lines are listed in the summary")
        if outcome.records % LINES_PER_CHECK:
            continue
        _show(progress, outcome)
        now = time.monotonic()
        if state is not None and now >= next_save and ledger.watermark != saved:
            saved = ledger.watermark
            state.save(*saved)
            next_save = now + SAVE_INTERVAL


def _send_line(line: Line, dry_run: bool, client: Client, ledger: Ledger) -> str | None:
    """Send (or validate) one line's message; the reason it is invalid, or None."""
    message: dict[str, Any] = line.message or {}
    message_id = message.get("messageId")
    if line.error is not None or not isinstance(message_id, str):
        reason = line.error or f"messageId: must be a string, not {type(message_id).__name__}"
        ledger.invalid(line, reason)
        return reason
    if dry_run:
        try:
            replay(client, message)
        except MessageError as exc:
            ledger.invalid(line, str(exc))
            return str(exc)
        ledger.valid(line)
        return None
    ledger.expect(line, message_id)
    if STORED_MARK in message:
        client.forward(stored_form(message))
        return None
    try:
        replay(client, message)
    except MessageError as exc:
        ledger.refused(message_id, str(exc))
        return str(exc)
    return None


def stored_form(message: dict[str, Any]) -> bytes:
    """A stored message as it is sent on: every field as the collector stored it (its
    `context.library`, `originalTimestamp`, fields no client call knows), but the fields the
    receiver sets for itself (`receivedAt`, `sentAt`), like the `tracking-api` destination.
    Rebuilding it through `replay` would replace the library and drop unknown fields."""
    return orjson.dumps({key: value for key, value in message.items() if key not in HOP_FIELDS})


def _wait_until_settled(
    client: Client, outcome: _Run, progress: Progress, timeout: float | None
) -> None:
    """Flush, redrawing the progress, until everything sent is settled or `timeout` passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not client.flush(timeout=0.2):
        _show(progress, outcome)
        if deadline is not None and time.monotonic() >= deadline:
            return


def _show(progress: Progress, outcome: _Run, *, final: bool = False) -> None:
    """Update the progress; the input counts as done in the proportion of settled lines, so
    that the percentage and the ETA include the messages still queued."""
    ledger = outcome.ledger
    settled = ledger.sent + ledger.rejected.total + ledger.failed.total
    fraction = settled / outcome.records if outcome.records else 1.0
    done = outcome.start_bytes + round((outcome.read_bytes - outcome.start_bytes) * fraction)
    progress.update(done, outcome.read_line, ledger.sent, ledger.rejected.total, final=final)


def _summarise(outcome: _Run, args: argparse.Namespace, source: str) -> int:
    """Print what happened to `source`; returns its exit status."""
    ledger = outcome.ledger
    verb = "valid" if args.dry_run else "sent"
    rate = ledger.sent / outcome.seconds if outcome.seconds > 0 else 0.0
    head = f"{outcome.label}: {ledger.sent:,} {verb}, {ledger.rejected.total:,} rejected"
    if ledger.failed.total:
        head += f", {ledger.failed.total:,} not delivered"
    head += (
        f" ({outcome.records:,} lines in {format_duration(outcome.seconds)}, {rate:,.0f} events/s)"
    )
    if args.dry_run:
        head += "; dry run, nothing was sent"
    print(head)
    _print_tally("rejected", ledger.rejected)
    _print_tally("not delivered", ledger.failed)
    unfinished = outcome.interrupted or ledger.failed.total or ledger.pending
    if unfinished and source != "-" and not args.dry_run:
        print(f"  settled up to line {ledger.watermark[0]:,}; continue with: --resume {source}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOT_DELIVERED if ledger.rejected.total or unfinished else EXIT_OK


def _print_tally(label: str, tally: Tally) -> None:
    for reason, (count, lines) in tally.by_reason.items():
        listed = ", ".join(str(number) for number in lines)
        more = f" and {count - len(lines):,} more" if count > len(lines) else ""
        noun = "line" if count == 1 else "lines"
        print(f"  {label}: {reason}: {noun} {listed}{more}")


@contextlib.contextmanager
def _open(path: pathlib.Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdin.buffer
        return
    with path.open("rb") as stream:
        yield stream


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Stop on SIGTERM the way Ctrl-C stops: settle what was sent, save, summarise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
