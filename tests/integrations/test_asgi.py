"""The ASGI middleware under uvicorn with a Starlette app: async and thread-pool endpoints,
background tasks, proxies and page calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

import trackline
from tests.integrations.serving import fetch, serve_asgi
from tests.support.capture import CaptureServer
from trackline.integrations.asgi import TracklineMiddleware


def starlette_app(client: trackline.Client, **options: Any) -> Starlette:
    async def home(request: Request) -> HTMLResponse:
        client.track("u", "Async Endpoint")
        return HTMLResponse("<p>home</p>")

    def sync(request: Request) -> PlainTextResponse:
        client.track("u", "Thread Pool Endpoint")
        return PlainTextResponse("sync")

    async def later(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(client.track, "u", "Background"))

    async def api(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", home),
            Route("/sync", sync),
            Route("/later", later),
            Route("/api", api),
        ],
        middleware=[Middleware(TracklineMiddleware, client=client, **options)],
    )


def delivered(client: trackline.Client, capture: CaptureServer) -> dict[str, dict[str, Any]]:
    assert client.flush(5.0)
    return {e.get("event") or e["type"]: e for e in capture.delivered()}


def test_async_sync_and_background_code_carry_the_request_context(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """An async endpoint, a sync one run in the thread pool, and a background task run after
    the response all carry their request's context."""
    headers = {"User-Agent": "Mozilla/5.0 (Android)", "Accept-Language": "ja"}
    with serve_asgi(starlette_app(client)) as url:
        for path in ("/?tab=1", "/sync", "/later"):
            assert fetch(f"{url}{path}", headers)[0] == 200
    events = delivered(client, capture)
    for name, path in [
        ("Async Endpoint", "/"),
        ("Thread Pool Endpoint", "/sync"),
        ("Background", "/later"),
    ]:
        context = events[name]["context"]
        assert context["ip"] == "127.0.0.1"
        assert context["userAgent"] == "Mozilla/5.0 (Android)"
        assert context["locale"] == "ja"
        assert context["page"]["path"] == path
    assert events["Async Endpoint"]["context"]["page"]["url"] == f"{url}/?tab=1"


def test_forwarded_for_from_a_trusted_proxy(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """With 127.0.0.1 trusted, the forwarded client address and scheme are used."""
    app = starlette_app(client, trusted_proxies=["127.0.0.1"])
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with serve_asgi(app) as url:
        fetch(f"{url}/", headers)
    context = delivered(client, capture)["Async Endpoint"]["context"]
    assert context["ip"] == "203.0.113.7"
    assert context["page"]["url"] == f"{url.replace('http', 'https', 1)}/"


def test_page_calls_for_html_responses(client: trackline.Client, capture: CaptureServer) -> None:
    """With page_views on, an HTML page gives a page call after the response; JSON does not."""
    with serve_asgi(starlette_app(client, page_views=True)) as url:
        fetch(f"{url}/?from=ad")
        fetch(f"{url}/api")
    assert client.flush(5.0)
    pages = [e for e in capture.delivered() if e["type"] == "page"]
    assert [p["properties"]["url"] for p in pages] == [f"{url}/?from=ad"]
    assert pages[0]["context"]["ip"] == "127.0.0.1"


def test_lifespan_passes_through(client: trackline.Client) -> None:
    """Non-HTTP scopes reach the app untouched: uvicorn's lifespan startup and shutdown run."""
    phases: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        phases.append("startup")
        yield
        phases.append("shutdown")

    app = Starlette(lifespan=lifespan, middleware=[Middleware(TracklineMiddleware)])
    with serve_asgi(app, lifespan="on") as url:
        assert fetch(f"{url}/nothing-here")[0] == 404
    assert phases == ["startup", "shutdown"]
