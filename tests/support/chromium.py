"""Debian's Chromium driven by Playwright, the way every browser test here launches it:
headless, from /usr/bin/chromium (Playwright never downloads a browser here)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from playwright.sync_api import Browser, sync_playwright

import trackline

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A launched Chromium; fails the test (never skips) when it is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


_CALLS: Final = frozenset({"identify", "track", "page", "screen", "group", "alias"})


class StoredCalls:
    """A client whose six calls return once the collector answered for the message.

    Playwright's sync API leaves an asyncio loop marked as running on the test's thread, and
    there a `sync=True` client hands each send to a worker instead of blocking what it takes
    for a running loop. Flushing after each call keeps "the call returned, so the message is
    stored, in call order" true in tests that drive a browser from the same thread."""

    def __init__(self, client: trackline.Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in _CALLS:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            assert self._client.flush(10.0), f"{name}() was not answered within 10 s"
            return result

        return call


def storing_clients(
    make_client: Callable[..., trackline.Client],
) -> Callable[..., trackline.Client]:
    """`make_client` whose clients' calls return once the collector answered (`StoredCalls`)."""

    def make(*args: Any, **kwargs: Any) -> trackline.Client:
        return StoredCalls(make_client(*args, **kwargs))  # type: ignore[return-value]

    return make
