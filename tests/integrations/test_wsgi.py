"""The WSGI middleware, served over real HTTP: request context, proxies and page calls."""

from __future__ import annotations

import concurrent.futures
import logging
import time
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest

import trackline
from tests.integrations.serving import fetch, serve_wsgi
from tests.support.capture import CaptureServer
from trackline.context import current
from trackline.integrations.pages import PageView
from trackline.integrations.wsgi import TracklineMiddleware


def shop(client: trackline.Client) -> Any:
    """A small WSGI app: every path tracks an event, some answer HTML, one streams."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/stream":

            def body() -> Iterator[bytes]:
                yield b"first "
                client.track("u", "Streamed")
                yield b"second"

            start_response("200 OK", [("Content-Type", "text/plain")])
            return body()
        if path == "/explicit":
            client.track("u", "Explicit", context={"ip": "198.51.100.1", "campaign": {"n": 1}})
        elif path == "/slow":
            time.sleep(0.05)
            client.track("u", "Slow", {"ua": environ.get("HTTP_USER_AGENT")})
        else:
            client.track("u", "Viewed", {"path": path})
        kind = "application/json" if path.startswith("/api") else "text/html; charset=utf-8"
        status = "404 Not Found" if path == "/missing" else "200 OK"
        start_response(status, [("Content-Type", kind)])
        return [b"ok"]

    return app


def delivered(client: trackline.Client, capture: CaptureServer) -> list[dict[str, Any]]:
    assert client.flush(5.0)
    return capture.delivered()


def test_calls_in_a_request_carry_its_context(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """A track call inside a request carries ip, userAgent, locale and page, unasked."""
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        status, _ = fetch(
            f"{url}/products/42?color=red",
            {
                "User-Agent": "Mozilla/5.0 (Macintosh)",
                "Referer": "https://news.example/",
                "Accept-Language": "nl-BE,nl;q=0.9",
            },
        )
    assert status == 200
    [event] = delivered(client, capture)
    context = event["context"]
    assert context["ip"] == "127.0.0.1"
    assert context["userAgent"] == "Mozilla/5.0 (Macintosh)"
    assert context["locale"] == "nl-BE"
    assert context["page"] == {
        "path": "/products/42",
        "url": f"{url}/products/42?color=red",
        "search": "?color=red",
        "referrer": "https://news.example/",
    }
    assert context["library"]["name"] == "trackline"


def test_the_calls_own_context_wins_key_by_key(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """Explicit context keys replace the request's; the request's other keys stay."""
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        fetch(f"{url}/explicit", {"User-Agent": "UA"})
    [event] = delivered(client, capture)
    assert event["context"]["ip"] == "198.51.100.1"
    assert event["context"]["campaign"] == {"n": 1}
    assert event["context"]["userAgent"] == "UA"


def test_concurrent_requests_each_see_only_their_own_context(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """Twelve overlapping requests on server threads: each event carries its request's agent."""
    with (
        serve_wsgi(TracklineMiddleware(shop(client))) as url,
        concurrent.futures.ThreadPoolExecutor(12) as pool,
    ):
        list(pool.map(lambda i: fetch(f"{url}/slow", {"User-Agent": f"agent-{i}"}), range(12)))
    events = delivered(client, capture)
    assert len(events) == 12
    assert all(e["context"]["userAgent"] == e["properties"]["ua"] for e in events)
    assert sorted(e["properties"]["ua"] for e in events) == sorted(f"agent-{i}" for i in range(12))


def test_events_tracked_while_streaming_the_body_carry_context(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """The scope lasts until the server closes the response, not until the app returns."""
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        assert fetch(f"{url}/stream", {"User-Agent": "streamer"}) == (200, b"first second")
    [event] = delivered(client, capture)
    assert event["event"] == "Streamed"
    assert event["context"]["userAgent"] == "streamer"


def test_no_request_context_outside_requests(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """A call made outside any request (here, on the test's thread) has no request keys."""
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        fetch(f"{url}/home", {"User-Agent": "UA"})
        client.track("u", "Background Job")
    outside = [e for e in delivered(client, capture) if e["event"] == "Background Job"]
    assert set(outside[0]["context"]) == {"library"}


def test_scope_ends_when_the_app_raises() -> None:
    """An app that raises leaves no request context behind on the server's thread."""

    def failing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        assert current() is not None
        raise RuntimeError("boom")

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1"}
    with pytest.raises(RuntimeError):
        TracklineMiddleware(failing)(environ, lambda *args: lambda data: None)
    assert current() is None


def test_forwarded_for_only_from_trusted_proxies(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """The same forwarded request: believed when 127.0.0.1 is a trusted proxy, else not."""
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.2", "X-Forwarded-Proto": "https"}
    trusted = TracklineMiddleware(shop(client), trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    with serve_wsgi(trusted) as url:
        fetch(f"{url}/trusted", headers)
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        fetch(f"{url}/untrusted", headers)
    events = {e["properties"]["path"]: e["context"] for e in delivered(client, capture)}
    assert events["/trusted"]["ip"] == "203.0.113.7"
    assert events["/trusted"]["page"]["url"].startswith("https://")
    assert events["/untrusted"]["ip"] == "127.0.0.1"
    assert events["/untrusted"]["page"]["url"].startswith("http://")


def test_no_page_calls_unless_enabled(client: trackline.Client, capture: CaptureServer) -> None:
    """Page calls are off by default: an HTML page served gives only the app's own event."""
    with serve_wsgi(TracklineMiddleware(shop(client))) as url:
        fetch(f"{url}/home")
    assert [e["type"] for e in delivered(client, capture)] == ["track"]


def test_page_calls_for_html_gets_only_by_default(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """With page_views on, the default filter counts successful HTML GETs: not JSON, not a
    404, not a POST."""
    app = TracklineMiddleware(shop(client), page_views=True, client=client)
    with serve_wsgi(app) as url:
        fetch(f"{url}/home?ref=mail", {"Referer": "https://mail.example/"})
        fetch(f"{url}/api/items")
        fetch(f"{url}/missing")
        fetch(f"{url}/form", method="POST")
    pages = [e for e in delivered(client, capture) if e["type"] == "page"]
    assert len(pages) == 1
    page = pages[0]
    assert page["properties"] == {
        "path": "/home",
        "url": f"{url}/home?ref=mail",
        "search": "?ref=mail",
        "referrer": "https://mail.example/",
    }
    assert page["context"]["page"] == page["properties"]
    assert page["anonymousId"]
    assert "userId" not in page


def test_page_calls_take_ids_from_analytics_js_cookies(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """The ajs_user_id / ajs_anonymous_id cookies (URL-encoded JSON, as analytics.js writes
    them) become the page call's ids, so server and browser events join up."""
    app = TracklineMiddleware(shop(client), page_views=True, client=client)
    with serve_wsgi(app) as url:
        fetch(f"{url}/home", {"Cookie": "ajs_user_id=%22user-7%22; ajs_anonymous_id=anon-3"})
    [page] = [e for e in delivered(client, capture) if e["type"] == "page"]
    assert (page["userId"], page["anonymousId"]) == ("user-7", "anon-3")


def test_page_filter_decides(client: trackline.Client, capture: CaptureServer) -> None:
    """A custom filter sees method, path, status and content type and picks the pages."""
    seen: list[PageView] = []

    def only_api(view: PageView) -> bool:
        seen.append(view)
        return view.request.path.startswith("/api") and view.status == 200

    app = TracklineMiddleware(shop(client), page_views=True, page_filter=only_api, client=client)
    with serve_wsgi(app) as url:
        fetch(f"{url}/home")
        fetch(f"{url}/api/items")
    pages = [e for e in delivered(client, capture) if e["type"] == "page"]
    assert [p["properties"]["path"] for p in pages] == ["/api/items"]
    assert [(v.request.method, v.status, v.content_type) for v in seen] == [
        ("GET", 200, "text/html; charset=utf-8"),
        ("GET", 200, "application/json"),
    ]


def test_a_raising_page_filter_costs_the_page_call_only(
    client: trackline.Client, capture: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A filter that raises is logged with its traceback; the response and the app's own
    events are unaffected."""

    def broken(view: PageView) -> bool:
        raise KeyError("oops")

    def expected(record: logging.LogRecord) -> bool:
        record.expected = True
        return True

    pages_logger = logging.getLogger("trackline.integrations.pages")
    pages_logger.addFilter(expected)
    try:
        app = TracklineMiddleware(shop(client), page_views=True, page_filter=broken)
        with serve_wsgi(app) as url:
            assert fetch(f"{url}/home") == (200, b"ok")
    finally:
        pages_logger.removeFilter(expected)
    assert [e["type"] for e in delivered(client, capture)] == ["track"]
    assert any("page filter raised" in r.getMessage() for r in caplog.records)


def test_list_bodies_reach_the_server_untouched(client: trackline.Client) -> None:
    """A list body is handed on as is, so the server can still compute Content-Length from it
    (wsgiref does for a one-item list) instead of falling back to closing the connection."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"hello"]

    with (
        serve_wsgi(TracklineMiddleware(app, page_views=True, client=client)) as url,
        urllib.request.urlopen(f"{url}/", timeout=10) as response,
    ):
        assert response.headers["Content-Length"] == "5"
