"""`trackline.flushing`: what a handler tracked is delivered before its return reaches the
platform, for functions and coroutines, with or without an exception, within one timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import trackline
from tests.support.capture import CaptureServer

MakeClient = Callable[..., trackline.Client]

HOLD = {"flush_interval": 60.0, "flush_at": 2500}


def test_a_decorated_handler_delivers_before_it_returns(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """Events tracked by the handler are delivered by the time its return value is back, even
    with a client that would otherwise wait a minute to send."""
    client = make_client("k", host=capture.url, **HOLD)

    @trackline.flushing(client, timeout=5.0)
    def handler(event: dict[str, str], context: object) -> str:
        client.track(event["user"], "Invoked")
        return "done"

    assert handler({"user": "u"}, None) == "done"
    assert [m["event"] for m in capture.delivered()] == ["Invoked"]


def test_a_handler_that_raises_is_flushed_then_raises(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """The flush runs when the handler raises, and the exception still reaches the caller."""
    client = make_client("k", host=capture.url, **HOLD)

    @trackline.flushing(client, timeout=5.0)
    def handler() -> None:
        client.track("u", "Before The Error")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        handler()
    assert [m["event"] for m in capture.delivered()] == ["Before The Error"]


def test_without_clients_every_live_client_is_flushed(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """With no client named, the flush covers every client alive in the process."""
    first = make_client("first", host=capture.url, **HOLD)
    second = make_client("second", host=capture.url, **HOLD)
    with trackline.flushing(timeout=5.0):
        first.track("u", "One")
        second.track("u", "Two")
    assert sorted(m["event"] for m in capture.delivered()) == ["One", "Two"]


def test_a_decorated_coroutine_is_flushed_after_it_completes(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """An async handler is awaited first, then flushed without blocking the loop."""
    client = make_client("k", host=capture.url, **HOLD)

    @trackline.flushing(client, timeout=5.0)
    async def handler() -> int:
        await asyncio.sleep(0)
        client.track("u", "Async Invoked")
        return 7

    assert asyncio.run(handler()) == 7
    assert [m["event"] for m in capture.delivered()] == ["Async Invoked"]


def test_a_flush_past_its_timeout_returns_false_and_keeps_the_events(
    capture: CaptureServer, make_client: MakeClient
) -> None:
    """When the API holds its answer past `timeout`, the handler still returns on time and
    the events stay queued for the next flush."""
    client = make_client("k", host=capture.url, **HOLD)
    capture.gate.clear()
    try:
        scope = trackline.flushing(client, timeout=0.2)
        with scope:
            client.track("u", "Slow")
        assert not scope.flush()
    finally:
        capture.gate.set()
    assert client.flush(5.0)
    assert [m["event"] for m in capture.delivered()] == ["Slow"]
