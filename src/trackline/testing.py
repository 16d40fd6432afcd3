"""Test helpers for applications that use trackline: record messages instead of sending them.

`Capture` is a transport (`Client(transport=...)`) that keeps every message it is given and
answers 200, plus the queries and assertions a test needs. It is thread safe, so background
workers may deliver into it while the test reads.

```python
from trackline.testing import Capture

capture = Capture()
client = capture.client()                      # synchronous: recorded when the call returns
client.track("019mr8mf4r", "Item Purchased", {"revenue": 39.95})
capture.assert_tracked("Item Purchased", user_id="019mr8mf4r", properties={"revenue": 39.95})
```

`Capture.installed()` (and the pytest fixture `trackline_capture`, see `trackline.pytest_plugin`)
also routes the module-level functions (`trackline.track(...)`) and every `Client` created
inside the block into the capture, so application code needs no change to be tested.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from trackline import _default
from trackline.client import Client, new_clients_send_to
from trackline.encoding import loads
from trackline.replay import wire_name
from trackline.transport import Response

#: Write key of the clients a `Capture` makes; any non-empty key would do.
TEST_WRITE_KEY = "trackline-test-key"

Message = dict[str, Any]


class Capture:
    """A transport that records delivered messages, with helpers to query and assert on them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._messages: list[Message] = []
        self._requests = 0

    # -- the Transport protocol --------------------------------------------------------------

    def post(self, path: str, body: bytes | bytearray) -> Response:
        """Record the messages of one request body (a batch or a single message)."""
        document = loads(body)
        batch = document.get("batch") if isinstance(document, dict) else None
        received = batch if isinstance(batch, list) else [document]
        with self._lock:
            self._messages.extend(received)
            self._requests += 1
            self._lock.notify_all()
        return Response(status=200, body=b'{"success":true}')

    def reset_after_fork(self) -> None:
        """Nothing to reset: the capture holds no connections."""

    def close(self) -> None:
        """Nothing to release; a closed client's messages stay readable."""

    # -- making clients ----------------------------------------------------------------------

    def client(self, write_key: str = TEST_WRITE_KEY, **options: Any) -> Client:
        """A `Client` delivering into this capture, synchronous unless `sync=False` is given."""
        options.setdefault("sync", True)
        return Client(write_key, transport=self, **options)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Capture]:
        """Route the default client, and every `Client` created in the block, into the capture.

        The default client becomes a synchronous capturing one, and the default clients of
        compat modules (`trackline.compat.segment`) are made afresh, capturing too, on their
        next use; clients the code under test creates itself keep their options (asynchronous
        ones record after their flush, see `wait_for`). Everything is put back, and the
        clients made here shut down, on exit.
        """
        saved_default = _default.swap(self.client())
        saved_compat = {name: swap(None) for name, swap in _default.compat_defaults().items()}
        try:
            with new_clients_send_to(self):
                yield self
        finally:
            made: list[Any] = [_default.swap(saved_default)]
            for name, swap in _default.compat_defaults().items():
                made.append(swap(saved_compat.get(name)))
            for client in made:
                if client is not None:
                    client.shutdown(timeout=1.0)

    # -- reading -----------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """Every message recorded so far, in delivery order (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> int:
        """How many requests (batches) were recorded."""
        with self._lock:
            return self._requests

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._messages.clear()
            self._requests = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Wait until at least `count` messages were recorded (asynchronous clients deliver from
        a background thread), at most `timeout` seconds; returns the messages either way."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return list(self._messages)

    def find(self, type: str | None = None, **fields: Any) -> list[Message]:
        """Messages of `type` (any type when None) whose fields equal `fields`.

        Field names are the call arguments (`user_id`, `event`, `group_id`...); a mapping value
        (`properties={...}`, `traits={...}`) matches when its keys are a subset of the message's.
        """
        wanted = {wire_name(name): value for name, value in fields.items()}
        return [
            message
            for message in self.messages
            if (type is None or message.get("type") == type) and _matches(message, wanted)
        ]

    def tracked(self, event: str | None = None, **fields: Any) -> list[Message]:
        """Track messages, only those named `event` when given."""
        if event is not None:
            fields["event"] = event
        return self.find("track", **fields)

    # -- asserting ---------------------------------------------------------------------------

    def assert_tracked(self, event: str, *, times: int | None = None, **fields: Any) -> Message:
        """Assert that `event` was tracked with `fields` (`times` exactly, if given); returns
        the last matching message."""
        return self._assert_found("track", {"event": event, **fields}, times)

    def assert_not_tracked(self, event: str, **fields: Any) -> None:
        """Assert that no `event` with `fields` was tracked."""
        self._assert_found("track", {"event": event, **fields}, 0)

    def assert_identified(
        self, user_id: str, *, times: int | None = None, **fields: Any
    ) -> Message:
        """Assert that `user_id` was identified with `fields` (traits={...}, ...)."""
        return self._assert_found("identify", {"user_id": user_id, **fields}, times)

    def assert_sent(self, type: str, *, times: int | None = None, **fields: Any) -> Message:
        """Assert that a message of `type` with `fields` was sent (page, screen, group, alias)."""
        return self._assert_found(type, fields, times)

    def assert_nothing_sent(self) -> None:
        """Assert that no message at all was recorded."""
        messages = self.messages
        if messages:
            raise AssertionError(
                f"expected no messages, got {len(messages)}:\n{_listing(messages)}"
            )

    def _assert_found(self, type: str, fields: dict[str, Any], times: int | None) -> Message:
        found = self.find(type, **fields)
        if (times is None and found) or (times is not None and len(found) == times):
            return found[-1] if found else {}
        wanted = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        expected = "at least once" if times is None else f"{times} time(s)"
        recorded = self.messages
        listing = _listing(recorded) if recorded else "  (nothing)"
        raise AssertionError(
            f"expected {type} with {wanted} {expected}, found {len(found)}; recorded:\n{listing}"
        )


def _matches(message: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        actual = message.get(key)
        if isinstance(value, Mapping) and not isinstance(actual, Mapping):
            return False
        if isinstance(value, Mapping):
            assert isinstance(actual, Mapping)
            if not _matches(actual, value):
                return False
        elif actual != value:
            return False
    return True


def _listing(messages: list[Message]) -> str:
    """One line per message: what a failed assertion shows to explain itself."""
    lines = []
    for message in messages:
        who = message.get("userId") or f"anonymous {message.get('anonymousId')}"
        what = message.get("event") or message.get("name") or message.get("groupId") or ""
        details = message.get("properties") or message.get("traits") or {}
        lines.append(f"  {message.get('type')} {what!r} for {who} {details}".rstrip())
    return "\n".join(lines)
