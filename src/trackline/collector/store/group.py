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
import queue
from collections.abc import Sequence
from typing import Any, Protocol

from trackline.collector.ingest import Row
from trackline.collector.store.base import WriteResult
from trackline.collector.store.jobs import Route, Routes


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


class Waiting(Protocol):
    """Anything a writer answers: its future, and the event loop waiting on it (or None)."""

    @property
    def future(self) -> asyncio.Future[Any] | concurrent.futures.Future[Any]: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...


def settle(group: Sequence[Waiting], outcomes: Sequence[object]) -> None:
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


def take_group(
    waiting: queue.SimpleQueue[object], first: Any, kinds: tuple[type, ...], max_rows: int
) -> tuple[list[Any], object]:
    """`first` and the items of `kinds` waiting behind it, up to about `max_rows` rows, for one
    transaction; and the next item of another kind, which must wait its turn (else None)."""
    group = [first]
    size = len(first.rows)
    while size < max_rows:
        try:
            following = waiting.get_nowait()
        except queue.Empty:
            break
        if not isinstance(following, kinds):
            return group, following
        item: Any = following
        group.append(item)
        size += len(item.rows)
    return group, None


def fail_waiting(waiting: queue.SimpleQueue[object], error: BaseException) -> None:
    """Answer every item still queued with `error`: a writer stopping must not leave a request
    that slipped in while it closed waiting forever."""
    while True:
        try:
            late: Any = waiting.get_nowait()
        except queue.Empty:
            return
        if hasattr(late, "loop"):
            settle([late], [error])
        elif hasattr(late, "future"):
            resolve(late.future, error)


def routes_per_row(writes: Sequence[Any]) -> list[Route | None]:
    """The writes' routes, one per row; rows written without routes go nowhere."""
    routes: list[Route | None] = []
    for item in writes:
        routes += [()] * len(item.rows) if item.routes is None else item.routes
    return routes


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
