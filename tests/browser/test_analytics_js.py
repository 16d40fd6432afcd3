"""Segment's own analytics.js (npm `@segment/analytics-next`) in Debian's Chromium, sending to a
trackline collector on another port: a Flask page rendered with the loader helper, the library
served by the collector (`analytics_js=`) from the npm install, the server's calls joined to
the browser's visitor, `sendBeacon` and `fetch(keepalive)` on unload, and a page at an origin
the collector does not allow storing nothing.

Every page here also checks that analytics.js logged no error and requested nothing outside
the shop and the collector (no Segment CDN, no Segment API, no metrics)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app, render_template_string
from playwright.sync_api import Browser, Page

import trackline
from tests.collector.conftest import Http
from tests.integrations.serving import serve_wsgi
from trackline.collector import RunningCollector, serve
from trackline.integrations.flask import Trackline
from trackline.integrations.request import cookie_id

KEY = "shop-frontend-7d1c"

#: Every page's start; the icon keeps Chromium from asking the shop for /favicon.ico.
HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
"""

PAGE = (
    HEAD
    + """<title>Shop</title>
{{ trackline_snippet() }}
</head>
<body>
<h1>Shop</h1>
<script>
  analytics.identify("user-7", {email: "ada@example.com"});
  analytics.track("Product Viewed", {sku: "A-1"});
</script>
</body>
</html>
"""
)

#: A page that reports its own unload twice: with sendBeacon and with fetch(keepalive).
LEAVING = (
    HEAD
    + """<title>Leaving</title>
{{ trackline_snippet(page=False) }}
<script>
  addEventListener("pagehide", function () {
    var url = {{ collector|tojson }} + "/v1/t";
    function left(how) {
      return JSON.stringify({type: "track", event: "Left", anonymousId: "anon-unload",
                             properties: {how: how}, writeKey: {{ key|tojson }}});
    }
    navigator.sendBeacon(url, left("beacon"));
    fetch(url, {method: "POST", keepalive: true, body: left("keepalive"),
                headers: {"Content-Type": "text/plain"}});
  });
</script>
</head>
<body><h1>Leaving</h1></body>
</html>
"""
)


#: An app that bundles analytics.js itself (the npm package's UMD build stands in for the
#: app's bundle) and configures nothing but the write key and the collector as `cdnURL`.
BUNDLED = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Bundled</title><link rel="icon" href="data:,"></head>
<body>
<script src="/bundle.js"></script>
<script>
  var analytics = AnalyticsNext.AnalyticsBrowser.load(
    {writeKey: {{ key|tojson }}, cdnURL: {{ collector|tojson }}});
  analytics.track("Bundled App Opened");
</script>
</body>
</html>
"""


def shop_app() -> Flask:
    """The shop: its pages render the loader with `trackline_snippet()`; `/checkout` makes a
    server-side track with no ids at all."""
    app = Flask("shop")
    Trackline(app)

    @app.get("/")
    def home() -> str:
        return render_template_string(PAGE)

    @app.get("/leaving")
    def leaving() -> str:
        config = current_app.config
        return render_template_string(LEAVING, collector=config["TRACKLINE_HOST"], key=KEY)

    @app.get("/checkout")
    def checkout() -> str:
        client: trackline.Client = current_app.config["SERVER_CLIENT"]
        client.track(event="Order Completed", properties={"revenue": 39.95})
        return "thanks"

    @app.get("/bundled")
    def bundled() -> str:
        config = current_app.config
        return render_template_string(BUNDLED, collector=config["TRACKLINE_HOST"], key=KEY)

    @app.get("/bundle.js")
    def bundle() -> tuple[bytes, dict[str, str]]:
        umd: Path = current_app.config["UMD_BUILD"]
        return umd.read_bytes(), {"Content-Type": "text/javascript"}

    @app.get("/done")
    def done() -> str:
        return '<!doctype html><link rel="icon" href="data:,"><title>Done</title>'

    return app


@dataclasses.dataclass
class Site:
    shop: str
    elsewhere: str
    collector: RunningCollector
    http: Http

    def events(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The stored events, newest first, once there are at least `count`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.http.events()
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"{len(found)} of {count} events: {found}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, analytics_js: Path) -> Iterator[Site]:
    """The shop served at two origins, and a collector that allows only the first, takes
    only KEY and serves the npm package's analytics.js."""
    app = shop_app()
    database = tmp_path_factory.mktemp("analytics-js") / "events.sqlite3"
    with (
        serve_wsgi(app) as shop,
        serve_wsgi(app) as elsewhere,
        serve(database, write_keys=[KEY], allow_origins=[shop], analytics_js=analytics_js) as c,
    ):
        client = trackline.Client(KEY, host=c.url, sync=True)
        app.config.update(
            TRACKLINE_WRITE_KEY=KEY,
            TRACKLINE_HOST=c.url,
            SERVER_CLIENT=client,
            UMD_BUILD=analytics_js.with_name("index.js"),
        )
        try:
            yield Site(shop, elsewhere, c, Http(c.url))
        finally:
            client.shutdown(timeout=2.0)


@dataclasses.dataclass
class Visit:
    """A browser context's page and what it logged and requested."""

    page: Page
    errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)

    def anonymous_id(self) -> str | None:
        cookies = {c["name"]: c["value"] for c in self.page.context.cookies()}
        return cookie_id(cookies.get("ajs_anonymous_id"))


@pytest.fixture
def visit(browser: Browser, site: Site) -> Iterator[Callable[[str], Visit]]:
    """Open a URL in a fresh context (no cookies) on an emptied store."""
    assert site.http.request("DELETE", "/api/events").status == 200
    opened: list[Visit] = []

    def open_page(url: str) -> Visit:
        context = browser.new_context()
        visit = Visit(context.new_page())
        page = visit.page
        page.on("pageerror", lambda error: visit.errors.append(str(error)))
        page.on("console", lambda m: visit.errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda request: visit.requests.append(request.url))
        page.on("requestfailed", lambda request: visit.failed.append(request.url))
        page.goto(url)
        opened.append(visit)
        return visit

    yield open_page
    for visit in opened:
        visit.page.context.close()


def only_site_requests(visit: Visit, site: Site) -> list[str]:
    """What the page requested outside the shop, the other origin and the collector."""
    ours = (site.shop + "/", site.elsewhere + "/", site.collector.url + "/", "data:")
    return [url for url in visit.requests if not url.startswith(ours)]


def test_page_identify_and_track_arrive_with_the_browsers_context(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """The loader's page call and the page's identify and track are stored with the
    browser's userAgent, the page URL and the sender's ip, under the visitor's anonymousId
    (the one in analytics.js's cookie), sent by analytics.js itself."""
    shop = visit(site.shop + "/")
    events = site.events(3)
    assert sorted(e["type"] for e in events) == ["identify", "page", "track"]
    agent = shop.page.evaluate("navigator.userAgent")
    anonymous_id = shop.anonymous_id()
    assert anonymous_id
    for event in events:
        context = event["context"]
        assert context["userAgent"] == agent
        assert context["page"]["url"] == site.shop + "/"
        assert context["ip"] == "127.0.0.1"
        assert context["library"]["name"] == "analytics.js"
        assert event["anonymousId"] == anonymous_id
    [identify] = [e for e in events if e["type"] == "identify"]
    assert (identify["userId"], identify["traits"]) == ("user-7", {"email": "ada@example.com"})
    [track] = [e for e in events if e["type"] == "track"]
    assert (track["event"], track["properties"]) == ("Product Viewed", {"sku": "A-1"})
    assert shop.errors == []
    assert only_site_requests(shop, site) == []
    assert shop.failed == []


def test_a_server_side_track_shares_the_browsers_anonymous_id(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """A track the server makes while handling a request from that browser (no ids given)
    is stored under the same anonymousId as the browser's own events."""
    shop = visit(site.shop + "/")
    site.events(3)
    status = shop.page.evaluate("fetch('/checkout').then(function (r) { return r.status; })")
    assert status == 200
    events = site.events(4)
    [order] = [e for e in events if e.get("event") == "Order Completed"]
    browser_ids = {e["anonymousId"] for e in events if e is not order}
    assert browser_ids == {order["anonymousId"]} == {shop.anonymous_id()}
    assert order["context"]["library"]["name"] == "trackline"
    assert order["context"]["page"]["url"] == site.shop + "/checkout"
    assert shop.errors == []


def test_a_bundled_app_needs_only_the_collector_as_cdn_url(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """`AnalyticsBrowser.load({writeKey, cdnURL})` with the collector as `cdnURL` and nothing
    else: the settings it fetches send its events to the collector."""
    bundled = visit(site.shop + "/bundled")
    [event] = site.events(1)
    assert event["event"] == "Bundled App Opened"
    assert event["context"]["page"]["url"] == site.shop + "/bundled"
    assert bundled.errors == []
    assert only_site_requests(bundled, site) == []


def test_send_beacon_and_keepalive_fetch_on_unload_arrive(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """What a page sends as it unloads, with `navigator.sendBeacon` and with
    `fetch(..., {keepalive: true})` (text/plain bodies, key inside), is stored."""
    leaving = visit(site.shop + "/leaving")
    leaving.page.goto(site.shop + "/done")
    events = site.events(2)
    assert sorted(e["properties"]["how"] for e in events) == ["beacon", "keepalive"]
    assert {e["context"]["ip"] for e in events} == {"127.0.0.1"}
    assert leaving.errors == []


def test_a_page_at_an_origin_not_allowed_stores_nothing(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """The same page served at an origin the collector does not allow cannot load the
    settings, and its own cross-origin POST with the key is stopped at the preflight:
    nothing is stored, while the allowed origin's page still works."""
    foreign = visit(site.elsewhere + "/")
    settings = f"{site.collector.url}/v1/projects/{KEY}/settings"
    deadline = time.monotonic() + 15.0
    while settings not in foreign.failed:
        assert time.monotonic() < deadline, foreign.failed
        foreign.page.wait_for_timeout(50)
    attempt = """async ([url, key]) => {
        try {
            await fetch(url, {method: "POST", body: JSON.stringify({type: "track",
                event: "Planted", anonymousId: "x"}), headers: {"Content-Type": "text/plain",
                "Authorization": "Basic " + btoa(key + ":")}});
            return "sent";
        } catch (error) {
            return "blocked";
        }
    }"""
    outcome = foreign.page.evaluate(attempt, [site.collector.url + "/v1/t", KEY])
    assert outcome == "blocked"
    assert any("CORS" in error for error in foreign.errors)
    visit(site.shop + "/")
    events = site.events(3)
    assert {e["context"]["page"]["url"] for e in events} == {site.shop + "/"}
    assert not [e for e in events if e.get("event") == "Planted"]
