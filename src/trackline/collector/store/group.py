"""Group-commit plumbing every store engine shares: a write waiting for its commit, and
handing the outcomes back to the threads and event loops that wait for them.

Each engine has one writer thread that takes every write waiting and commits them together;
what differs is how a group is written. What does not is here: a write carries its future
and, when it came from a coroutine, its event loop, and results go back with one wake-up per
event loop rather than one per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from trackline.collector.ingest import Row
from trackline.collector.store.base import WriteResult
from trackline.collector.store.jobs import Routes


@dataclasses.dataclass(slots=True)
class PendingWrite:
    """Rows (and a count of rejected messages) waiting for the writer, and who waits."""

    rows: Sequence[Row]
    rejected: int
    future: asyncio.Future[Any] | concurrent.futures.Future[Any]
    loop: asyncio.AbstractEventLoop | None
    #: The destinations each row is owed to (see `jobs.Routes`); None: nowhere.
    routes: Routes | None = None


def resolve(future: Any, outcome: object) -> None:
    """Set `outcome` (a result, or an exception to raise) on `future` unless nobody waits."""
    if future.done():  # the waiter gave up (timeout or cancelled)
        return
    if isinstance(future, concurrent.futures.Future) and not future.set_running_or_notify_cancel():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _resolve_all(settled: list[tuple[Any, Any]]) -> None:
    for future, outcome in settled:
        resolve(future, outcome)


def settle(group: Sequence[PendingWrite], outcomes: Sequence[object]) -> None:
    """Hand each write its outcome; one wake-up per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
    for item, outcome in zip(group, outcomes, strict=True):
        if item.loop is None:
            resolve(item.future, outcome)
        else:
            by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_resolve_all, settled)


def credit(group: Sequence[PendingWrite], stored: Sequence[bool]) -> list[WriteResult]:
    """Each write's accepted and duplicate counts, from whether each row of the group (in
    order) was stored; a messageId carried twice is stored, and credited, the first time."""
    results = []
    start = 0
    for item in group:
        end = start + len(item.rows)
        accepted = sum(stored[start:end])
        results.append(WriteResult(accepted, len(item.rows) - accepted))
        start = end
    return results
