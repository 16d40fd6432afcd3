"""The docs' "Browser and server together" guide: its examples run as written (pointed at a
local collector instead of port 8765) in Chromium. The Flask app and the Django settings,
template and views each render the loader, analytics.js sends the page view and a click, and
the server's `track` in the checkout view joins the browser's visitor."""

from __future__ import annotations

import contextlib
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from django.test import override_settings
from django.urls import path
from playwright.sync_api import Browser

import trackline
from tests.collector.conftest import Http
from tests.integrations.apps import django_app
from tests.integrations.serving import serve_wsgi
from tests.support import docs_examples
from tests.support.docs_examples import run_example as run
from trackline.collector import RunningCollector, serve

GUIDE = "guides/browser.md"
WSGIApp = Callable[[WSGIEnvironment, StartResponse], Any]


def block(marker: str) -> str:
    """The one Python example of the guide containing `marker`."""
    return docs_examples.python_block(GUIDE, marker)


def template_block() -> str:
    """The one ```django block of the guide."""
    [found] = [
        b.source
        for b in docs_examples.blocks(docs_examples.page_named(GUIDE))
        if b.language == "django"
    ]
    return found


@contextlib.contextmanager
def shop_and_collector(
    database: Path, analytics_js: Path
) -> Iterator[tuple[str, RunningCollector, dict[str, WSGIApp]]]:
    """A WSGI server whose app is set later (the app needs the collector's URL, the collector
    the shop's origin), and a collector allowing that origin and serving analytics.js."""
    holder: dict[str, WSGIApp] = {}

    def later(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        return holder["app"](environ, start_response)

    with (
        serve_wsgi(later) as shop,
        serve(database, allow_origins=[shop], analytics_js=analytics_js) as collector,
    ):
        try:
            yield shop, collector, holder
        finally:
            trackline.shutdown(timeout=2.0)


def shop_visit(browser: Browser, shop: str, collector: RunningCollector) -> list[dict[str, Any]]:
    """Open the shop, click "Add to cart", POST to /checkout from the page; the stored events
    once the page view, the click and the server's order are all in."""
    context = browser.new_context()
    # The examples' pages have no icon; the browser's request for one is not the example's.
    context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(shop + "/")
        page.get_by_role("button", name="Add to cart").click()
        status = page.evaluate("fetch('/checkout', {method: 'POST'}).then(r => r.status)")
        assert status == 200
        assert trackline.flush(5.0)
        http = Http(collector.url)
        deadline = time.monotonic() + 15.0
        while len(events := http.events()) < 3:
            assert time.monotonic() < deadline, events
            time.sleep(0.05)
    finally:
        context.close()
    assert errors == []
    return events


def assert_one_visitor(events: list[dict[str, Any]]) -> None:
    """The page view and the click come from analytics.js, the order from trackline, all
    under one anonymousId."""
    by_name = {e.get("event") or e["type"]: e for e in events}
    assert set(by_name) == {"page", "Product Added", "Order Completed"}
    assert by_name["Product Added"]["properties"] == {"sku": "A-1"}
    assert by_name["page"]["context"]["library"]["name"] == "analytics.js"
    assert by_name["Order Completed"]["context"]["library"]["name"] == "trackline"
    assert len({e["anonymousId"] for e in events}) == 1


def test_flask_example(browser: Browser, analytics_js: Path, tmp_path: Path) -> None:
    with shop_and_collector(tmp_path / "events.sqlite3", analytics_js) as (shop, collector, app):
        example = block("from trackline.integrations.flask import Trackline")
        app["app"] = run(example.replace("http://127.0.0.1:8765", collector.url))["app"]
        events = shop_visit(browser, shop, collector)
    assert_one_visitor(events)


def test_django_example(browser: Browser, analytics_js: Path, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "shop.html").write_text(template_block())
    views = run(block("# views.py"))
    urls = types.ModuleType("docs_browser_urls")
    urls.urlpatterns = [path("", views["shop"]), path("checkout", views["checkout"])]  # type: ignore[attr-defined]
    templates = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [str(tmp_path / "templates")],
        }
    ]
    with shop_and_collector(tmp_path / "events.sqlite3", analytics_js) as (shop, collector, app):
        example = block("# settings.py").replace("http://127.0.0.1:8765", collector.url)
        settings = {k: v for k, v in run(example).items() if k.isupper()}
        with override_settings(**settings, ROOT_URLCONF=urls, TEMPLATES=templates):
            app["app"] = django_app.make_application()
            events = shop_visit(browser, shop, collector)
    assert_one_visitor(events)
