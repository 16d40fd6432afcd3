"""The progress display of `trackline import`: a bar redrawn in place on a terminal, plain
periodic lines in a log or a pipe.

Written here rather than taken from a library because it is one line of text: the rate is the
events delivered per second since the start, the ETA the remaining input bytes at the rate the
input has been read so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TextIO

BAR_WIDTH: Final = 24
#: Seconds between redraws of the bar on a terminal.
TTY_INTERVAL: Final = 0.1


class Progress:
    """Reports the progress of one input on `stream`; call `update` as often as you like."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        total_bytes: int | None,
        start_bytes: int = 0,
        tty: bool,
        interval: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """With `enabled` False only `note` prints anything."""
        self._stream = stream
        self._enabled = enabled
        self._label = label
        self._total = total_bytes
        self._start_bytes = start_bytes
        self._tty = tty
        self._interval = TTY_INTERVAL if tty else interval
        self._clock = clock
        self._started = clock()
        self._next = self._started + self._interval
        self._drawn = False

    def update(
        self, done_bytes: int, line: int, sent: int, rejected: int, *, final: bool = False
    ) -> None:
        """Show the state if the interval has passed. `final` draws the bar's last state at
        once; a log gets no last line, since the summary that follows says it all."""
        now = self._clock()
        if not self._enabled or (final and not self._tty) or (not final and now < self._next):
            return
        self._next = now + self._interval
        text = self._describe(now, done_bytes, line, sent, rejected)
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def note(self, text: str) -> None:
        """Print a line of its own (a bad line's report) without garbling the bar."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._drawn = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line so that what follows starts on a fresh one."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def _describe(self, now: float, done_bytes: int, line: int, sent: int, rejected: int) -> str:
        elapsed = max(now - self._started, 1e-9)
        parts = [self._label]
        if self._total:
            fraction = min(done_bytes / self._total, 1.0)
            if self._tty:
                filled = int(fraction * BAR_WIDTH)
                parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
            parts.append(f"{fraction:4.0%}")
        parts.append(f"line {line:,}")
        parts.append(f"sent {sent:,}")
        if rejected:
            parts.append(f"rejected {rejected:,}")
        parts.append(f"{sent / elapsed:,.0f} events/s")
        read = done_bytes - self._start_bytes
        if self._total and read > 0:
            remaining = max(self._total - done_bytes, 0) * elapsed / read
            parts.append(f"ETA {format_duration(remaining)}")
        return "  ".join(parts)


def format_duration(seconds: float) -> str:
    """`0:07`, `12:30`, `1:02:03`: minutes and seconds, with hours when there are any."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
