"""The client inside a running asyncio app (Starlette under uvicorn): flush and shutdown are
awaited without blocking the event loop, `async with` shuts down, and a sync client's calls
never hold the loop while its request is out.

Each test holds the sink's answers (`capture.gate`) and then asks the app for `/ping`: an app
whose loop were blocked could not answer until the gate opens.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import trackline
from tests.integrations.serving import fetch, serve_asgi
from tests.support import docs_examples
from tests.support.capture import CaptureServer

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def app(host: str) -> Starlette:
    sync_client = trackline.Client("sync-key", host=host, sync=True, **FAST)  # type: ignore[arg-type]
    background = trackline.Client("async-key", host=host, **FAST)  # type: ignore[arg-type]

    async def ping(request: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    async def sync_track(request: Request) -> JSONResponse:
        message_id = sync_client.track("u", "Sync From A Coroutine")
        delivered = await sync_client.flush_async(10)
        return JSONResponse({"id": message_id, "delivered": delivered})

    async def flush(request: Request) -> JSONResponse:
        background.track("u", "Then Flushed")
        timeout = float(request.query_params.get("timeout", "10"))
        return JSONResponse({"flushed": await background.flush_async(timeout)})

    async def scoped(request: Request) -> JSONResponse:
        async with trackline.Client("scoped-key", host=host, **FAST) as client:  # type: ignore[arg-type]
            message_id = client.track("u", "Inside Async With")
        stats = client.stats
        return JSONResponse(
            {"id": message_id, "delivered": stats.delivered, "closed": repr(client)}
        )

    return Starlette(
        routes=[
            Route("/ping", ping),
            Route("/sync-track", sync_track),
            Route("/flush", flush),
            Route("/scoped", scoped),
        ]
    )


@pytest.fixture
def served(capture: CaptureServer) -> Iterator[str]:
    with serve_asgi(app(capture.url)) as url:
        yield url


def held_request(capture: CaptureServer, url: str) -> dict[str, Any]:
    """Call `url` while the sink holds its answers; `/ping` must be answered meanwhile.
    Returns the JSON `url` answers once the sink lets go."""
    capture.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fetch, url)
        try:
            assert capture.wait_for_requests(1, timeout=10), "nothing reached the sink"
            status, body = fetch(url.split("/", 3)[0] + "//" + url.split("/", 3)[2] + "/ping")
            assert (status, body) == (200, b"pong"), "the event loop was blocked"
            assert not pending.done()
        finally:
            capture.gate.set()
        status, body = pending.result(timeout=20)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def test_a_sync_client_never_holds_the_loop_and_flush_async_waits_for_its_answer(
    capture: CaptureServer, served: str
) -> None:
    """A sync client's call from a coroutine returns at once (a worker sends it), the loop
    serves other requests while the request is out, and `flush_async` reports it delivered."""
    result = held_request(capture, f"{served}/sync-track")
    assert result["delivered"] is True
    assert capture.delivered_ids() == [result["id"]]


def test_flush_async_waits_without_blocking_the_loop(capture: CaptureServer, served: str) -> None:
    """`await flush_async()` waits for delivery while the loop keeps serving."""
    assert held_request(capture, f"{served}/flush") == {"flushed": True}
    assert [m["event"] for m in capture.delivered()] == ["Then Flushed"]


def test_flush_async_keeps_its_timeout(capture: CaptureServer, served: str) -> None:
    """With the sink holding its answer, `flush_async(0.3)` returns False at its deadline."""
    capture.gate.clear()
    try:
        status, body = fetch(f"{served}/flush?timeout=0.3")
    finally:
        capture.gate.set()
    assert (status, json.loads(body)) == (200, {"flushed": False})


def test_async_with_shuts_down_without_blocking_the_loop(
    capture: CaptureServer, served: str
) -> None:
    """Leaving `async with Client(...)` awaits the shutdown: what was tracked is delivered
    before the block ends, and the loop serves meanwhile."""
    result = held_request(capture, f"{served}/scoped")
    assert result["delivered"] == 1
    assert "closed" in result["closed"]
    assert capture.delivered_ids() == [result["id"]]


def test_the_docs_asyncio_example_runs_as_written(capture: CaptureServer) -> None:
    """The asyncio page's `async with` and `sync=True` examples deliver what they track, the
    first before its block ends, the second when its flush returns True."""
    script = docs_examples.python_block("guides/asyncio.md", "async def report", capture.url)
    done = docs_examples.run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True"]
    assert sorted(m["event"] for m in capture.delivered()) == [
        "Payment Confirmed",
        "Report Generated",
    ]
