"""Bookkeeping of `trackline import`: what became of each line, and where a resume may start.

Lines are expected (by message id) before they are handed to the client; the client's
`on_success` and `on_error` callbacks, from its worker threads, settle them. The resume point
(the watermark) is the last line such that it and every line before it are settled for good:
delivered, or refused in a way a resend cannot change (invalid input, or rejected by the
server). A line that failed for a reason that may pass (an outage, a timeout) stops the
watermark, so a resume sends it again. Lines after it that were delivered are sent again too;
they keep their message ids, so a deduplicating server stores them once.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import threading
from collections.abc import Iterable
from typing import Any, Final

from trackline.cli._import_read import Line
from trackline.stats import DropReason

#: Drop reasons that a resend of the same bytes cannot change.
FINAL_REASONS: Final = frozenset({DropReason.REJECTED, DropReason.TOO_LARGE})
#: How many line numbers a summary lists per reason.
LINES_LISTED: Final = 20
#: How much of the input's start the resume state fingerprints.
FINGERPRINT_BYTES: Final = 64 * 1024


class Tally:
    """Lines grouped by reason: a count and the first few line numbers of each."""

    def __init__(self) -> None:
        self.by_reason: dict[str, tuple[int, list[int]]] = {}
        self.total = 0

    def add(self, reason: str, line: int) -> None:
        count, lines = self.by_reason.get(reason, (0, []))
        if len(lines) < LINES_LISTED:
            lines.append(line)
        self.by_reason[reason] = (count + 1, lines)
        self.total += 1


class Ledger:
    """The fate of every line of one input; thread safe."""

    def __init__(self, line: int = 0, offset: int = 0) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, collections.deque[Line]] = {}
        self._order: collections.deque[Line] = collections.deque()
        self._settled: dict[int, bool] = {}
        self._blocked = False
        self.watermark = (line, offset)
        self.sent = 0
        self.rejected = Tally()
        self.failed = Tally()

    def expect(self, line: Line, message_id: str) -> None:
        """`line` is about to be sent as `message_id`."""
        with self._lock:
            self._pending.setdefault(message_id, collections.deque()).append(line)
            if not self._blocked:
                self._order.append(line)

    def refused(self, message_id: str, reason: str) -> None:
        """The call refused the expected `message_id` (invalid): settled, counted as rejected."""
        with self._lock:
            line = self._take(message_id)
            if line is not None:
                self.rejected.add(reason, line.number)
                self._settle(line, True)

    def invalid(self, line: Line, reason: str) -> None:
        """`line` is not a message (bad input): settled for good, counted as rejected."""
        with self._lock:
            self.rejected.add(reason, line.number)
            if not self._blocked:
                self._order.append(line)
                self._settle(line, True)

    def valid(self, line: Line) -> None:
        """Dry run: `line` would be sent; settled, counted as sent."""
        with self._lock:
            self.sent += 1
            if not self._blocked:
                self._order.append(line)
                self._settle(line, True)

    def delivered(self, messages: Iterable[dict[str, Any]]) -> None:
        """`on_success`: the server accepted these messages."""
        with self._lock:
            for message in messages:
                line = self._take(message.get("messageId"))
                if line is not None:
                    self.sent += 1
                    self._settle(line, True)

    def dropped(self, error: Any, messages: Iterable[dict[str, Any]]) -> None:
        """`on_error`: these messages were dropped for `error.reason`."""
        reason = getattr(error, "reason", "dropped")
        final = reason in FINAL_REASONS
        text = str(error)
        with self._lock:
            for message in messages:
                line = self._take(message.get("messageId"))
                if line is None:
                    continue
                (self.rejected if final else self.failed).add(text, line.number)
                self._settle(line, final)

    @property
    def pending(self) -> int:
        """Lines handed to the client and not settled yet."""
        with self._lock:
            return sum(len(lines) for lines in self._pending.values())

    def _take(self, message_id: object) -> Line | None:
        if not isinstance(message_id, str):
            return None
        lines = self._pending.get(message_id)
        if not lines:
            return None
        line = lines.popleft()
        if not lines:
            del self._pending[message_id]
        return line

    def _settle(self, line: Line, final: bool) -> None:
        if self._blocked:
            return
        self._settled[line.last] = final
        order = self._order
        while order and order[0].last in self._settled:
            head = order[0]
            if not self._settled.pop(head.last):
                # Lines after a failure stay unsettled for this run: stop tracking their order.
                self._blocked = True
                order.clear()
                self._settled.clear()
                return
            order.popleft()
            self.watermark = (head.last, head.end)


@dataclasses.dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a resumed import starts: after `line` lines, at byte `offset`."""

    line: int
    offset: int


class StateFile:
    """The resume state of one input file, saved beside it or in a state directory."""

    def __init__(self, source: pathlib.Path, directory: pathlib.Path | None = None) -> None:
        self.source = source
        if directory is None:
            self.path = source.with_name(source.name + ".trackline-resume")
        else:
            digest = hashlib.sha1(str(source.resolve()).encode(), usedforsecurity=False)
            self.path = directory / f"{source.name}.{digest.hexdigest()[:10]}.trackline-resume"

    def load(self) -> ResumePoint | None:
        """The saved point, or None when there is none; ValueError if the input changed."""
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            point = ResumePoint(int(state["line"]), int(state["offset"]))
            fingerprint = str(state["fingerprint"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the resume state {self.path} ({exc})") from None
        if self._fingerprint(point.offset) != fingerprint:
            raise ValueError(
                f"{self.source} changed since the interrupted import; "
                f"remove {self.path} to import it from the start"
            )
        return point

    def save(self, line: int, offset: int) -> None:
        """Record that everything up to `line` (byte `offset`) is settled; atomic."""
        state = {"line": line, "offset": offset, "fingerprint": self._fingerprint(offset)}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, self.path)

    def remove(self) -> None:
        """Forget the state: the import is complete."""
        self.path.unlink(missing_ok=True)

    def _fingerprint(self, offset: int) -> str:
        """A hash of the input's first bytes (up to `offset`) and its size at least `offset`."""
        with self.source.open("rb") as stream:
            head = stream.read(min(offset, FINGERPRINT_BYTES))
            stream.seek(0, os.SEEK_END)
            long_enough = stream.tell() >= offset
        return hashlib.sha256(head).hexdigest() if long_enough else "too short"
