"""Telling the user what happened to their messages: callbacks and rate-limited log lines.

Callbacks get decoded messages, which costs a JSON decode, so messages are decoded only when a
callback is set. A callback that raises is logged and otherwise ignored: a bug in a user's error
handler must not stop delivery. Warnings about the same reason are logged at most once per
`interval` seconds, with a count of what was suppressed, so an outage does not flood the logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

from trackline.config import ErrorCallback, SuccessCallback
from trackline.encoding import loads
from trackline.errors import DeliveryError

logger = logging.getLogger(__name__)

WARNING_INTERVAL: Final = 10.0


class Reporter:
    """Routes outcomes to `on_error` / `on_success` and to the `trackline` loggers."""

    def __init__(
        self,
        on_error: ErrorCallback | None,
        on_success: SuccessCallback | None,
        interval: float = WARNING_INTERVAL,
    ) -> None:
        self._on_error = on_error
        self._on_success = on_success
        self._interval = interval
        self._lock = threading.Lock()
        self._last_warned: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    @property
    def wants_success(self) -> bool:
        """Whether delivered messages must be decoded for `on_success`."""
        return self._on_success is not None

    def delivered(self, items: Iterable[bytes]) -> None:
        """Report delivered messages to `on_success`."""
        if self._on_success is None:
            return
        messages = _decode(items)
        try:
            self._on_success(messages)
        except Exception:
            logger.exception("on_success callback raised; delivery goes on")

    def dropped(self, error: DeliveryError, items: Iterable[bytes], count: int) -> None:
        """Report `count` dropped messages: a rate-limited warning and `on_error`."""
        self.warn(error.reason, "dropped %d message(s): %s", count, error)
        if self._on_error is None:
            return
        messages = _decode(items)
        try:
            self._on_error(error, messages)
        except Exception:
            logger.exception("on_error callback raised; delivery goes on")

    def warn(self, key: str, message: str, *args: object) -> None:
        """Log a warning, at most once per interval for each `key`."""
        now = time.monotonic()
        with self._lock:
            last = self._last_warned.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last_warned[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar warning(s) suppressed)"
            args = (*args, suppressed)
        logger.warning(message, *args)


def _decode(items: Iterable[bytes]) -> list[dict[str, Any]]:
    return [loads(item) for item in items]
