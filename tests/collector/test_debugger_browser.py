"""The debugger page in a real headless Chromium (Debian's, driven by Playwright): events sent
by a `trackline.Client` appear live, filters narrow the list, the detail shows the stored
JSON, values stay text, pause holds updates, and the page fits a phone and both colour
schemes. Every test also checks that the page raised no script error, logged no error (a
Content-Security-Policy violation would be one) and requested nothing from another origin."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

import trackline
from tests.collector.conftest import Http, source_of
from tests.support.chromium import chromium, storing_clients
from trackline.collector import RunningCollector, serve

INJECTION = "<img src=x onerror=alert(1)>"
KEY = "web-frontend-2f9c71"

MakeClient = Callable[..., trackline.Client]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each test gets its own context (cookies, viewport)."""
    with chromium() as launched:
        yield launched


@dataclasses.dataclass
class Debugger:
    """An open debugger page and what it did: dialogs, errors, requested URLs."""

    page: Page
    url: str
    dialogs: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[str] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> Locator:
        return self.page.locator("#events > li")

    def names(self) -> list[str]:
        return self.page.locator("#events .row .name").all_text_contents()


@pytest.fixture
def open_debugger(
    browser: Browser, collector: RunningCollector, http: Http
) -> Iterator[Callable[..., Debugger]]:
    """Open the page (on an emptied store) in a fresh context; `options` go to the context
    (viewport, color_scheme...). At the end, no dialog, error or foreign request."""
    opened: list[Debugger] = []

    def open_page(path: str = "/", **options: Any) -> Debugger:
        context = browser.new_context(**options)
        page = context.new_page()
        debugger = Debugger(page, collector.url)

        def on_dialog(dialog: Any) -> None:
            debugger.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: debugger.errors.append(str(error)))
        page.on(
            "console",
            lambda msg: debugger.errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on("request", lambda request: debugger.requests.append(request.url))
        page.goto(collector.url + path)
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        opened.append(debugger)
        return debugger

    yield open_page
    for debugger in opened:
        debugger.page.context.close()
        assert debugger.dialogs == []
        assert debugger.errors == []
        foreign = [
            url for url in debugger.requests if not url.startswith((collector.url + "/", "data:"))
        ]
        assert foreign == []


@pytest.fixture
def make_client(make_client: MakeClient) -> MakeClient:
    """Clients whose calls return once the collector stored the message, even on the thread
    that drives the browser (see `StoredCalls`)."""
    return storing_clients(make_client)


@pytest.fixture
def client(collector: RunningCollector, make_client: MakeClient) -> trackline.Client:
    """A synchronous client: each call returns once the collector stored the message."""
    return make_client(KEY, host=collector.url, sync=True)


def test_empty_store_shows_a_snippet_that_sends_a_first_event(
    open_debugger: Callable[..., Debugger], collector: RunningCollector
) -> None:
    """An empty store shows a Python snippet naming this collector's URL; run as it is, it
    sends an event that then appears on the page."""
    debugger = open_debugger()
    empty = debugger.page.locator("#empty")
    expect(empty).to_be_visible()
    snippet = debugger.page.locator("#snippet").text_content() or ""
    assert f'host="{collector.url}"' in snippet
    exec(compile(snippet, "snippet", "exec"), {})  # what a user pastes into Python
    expect(debugger.rows).to_have_count(1)
    expect(debugger.page.locator("#events .name")).to_have_text("Item Purchased")
    expect(empty).to_be_hidden()


def test_events_appear_live_within_a_second_without_reload(
    open_debugger: Callable[..., Debugger], client: trackline.Client
) -> None:
    """Each event the client sends shows up at the top within a second, in the same document
    (no reload), newest first."""
    debugger = open_debugger()
    page = debugger.page
    page.evaluate("window.sameDocument = true")
    latencies = []
    for n, name in enumerate(["Signed Up", "Item Purchased", "Logged Out"], start=1):
        client.track("019mr8mf4r", name)
        started = time.monotonic()
        expect(debugger.rows).to_have_count(n, timeout=1000)
        latencies.append(time.monotonic() - started)
        expect(page.locator("#events .name").first).to_have_text(name)
    assert max(latencies) < 1.0
    assert debugger.names() == ["Logged Out", "Item Purchased", "Signed Up"]
    assert page.evaluate("window.sameDocument") is True


def test_a_row_shows_type_name_user_source_and_time(
    open_debugger: Callable[..., Debugger],
    client: trackline.Client,
    http: Http,
    collector: RunningCollector,
) -> None:
    """A row has a type badge coloured by type, the event or page/screen name, the userId or
    anonymousId, the source's key id (never the key), and a relative time with the exact one
    on hover."""
    client.track("019mr8mf4r", "Item Purchased")
    client.page(None, "Login", anonymous_id="anon-507f", category="Auth")
    client.screen("019mr8mf4r", "Register")
    client.identify("019mr8mf4r", {"name": "Tom"})
    debugger = open_debugger()
    page = debugger.page
    expect(debugger.rows).to_have_count(4)
    assert debugger.names() == ["Tom", "Register", "Auth / Login", "Item Purchased"]
    users = page.locator("#events .user").all_text_contents()
    assert users == ["019mr8mf4r", "019mr8mf4r", "anon anon-507f", "019mr8mf4r"]
    sources = page.locator("#events .source").all_text_contents()
    assert sources == [source_of(collector, KEY)] * 4
    assert sources[0].startswith("web-~")
    assert KEY not in (page.content())

    badges = page.locator("#events .badge")
    assert badges.all_text_contents() == ["identify", "screen", "page", "track"]
    colours = {badges.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(4)}
    assert len(colours) == 4

    stored = http.events()[0]
    time_cell = page.locator("#events time").first
    expect(time_cell).to_have_text("just now")
    assert time_cell.get_attribute("datetime") == stored["receivedAt"]
    assert f"receivedAt {stored['receivedAt']}" in (time_cell.get_attribute("title") or "")


def test_counts_per_type_follow_new_events(
    open_debugger: Callable[..., Debugger], client: trackline.Client
) -> None:
    """The type filters show how many events of each type the store holds, kept current."""
    client.track("u1", "A")
    client.track("u1", "B")
    client.identify("u1", {"plan": "pro"})
    debugger = open_debugger()

    def count(kind: str) -> Locator:
        return debugger.page.locator(f"#types .chip[data-type='{kind}'] .count")

    expect(count("")).to_have_text("3")
    expect(count("track")).to_have_text("2")
    expect(count("identify")).to_have_text("1")
    expect(count("page")).to_have_text("0")
    client.page("u1", "Home")
    expect(count("page")).to_have_text("1")
    expect(count("")).to_have_text("4")


def test_filters_narrow_the_list(
    open_debugger: Callable[..., Debugger],
    client: trackline.Client,
    collector: RunningCollector,
    make_client: MakeClient,
) -> None:
    """Type, text and source filters each narrow the list, on stored events and on new ones
    alike; clearing them shows everything again."""
    backend = make_client("backend-7d01aa", host=collector.url, sync=True)
    client.track("alice", "Item Purchased", {"sku": "A-1"})
    client.identify("bob", {"email": "bob@initech.com"})
    backend.track("carol", "Invoice Paid")
    backend.page("alice", "Pricing")
    debugger = open_debugger()
    page = debugger.page
    expect(debugger.rows).to_have_count(4)

    page.locator("#types .chip[data-type='track']").click()
    expect(debugger.rows).to_have_count(2)
    assert debugger.names() == ["Invoice Paid", "Item Purchased"]
    assert "type=track" in page.url
    client.identify("dave", {"name": "Dave"})  # not a track: stays out
    client.track("erin", "Signed Up")
    expect(page.locator("#events .name").first).to_have_text("Signed Up")
    expect(debugger.rows).to_have_count(3)

    page.locator("#types .chip[data-type='track']").click()  # again: all types
    page.locator("#search").fill("alice")
    expect(debugger.rows).to_have_count(2)
    assert debugger.names() == ["Pricing", "Item Purchased"]
    page.locator("#search").fill("initech.com")  # any value, not only ids and names
    expect(debugger.rows).to_have_count(1)
    expect(page.locator("#events .user")).to_have_text("bob")

    page.locator("#search").fill("")
    backend_id, web_id = source_of(collector, "backend-7d01aa"), source_of(collector, KEY)
    page.locator("#source").select_option(backend_id)
    expect(debugger.rows).to_have_count(2)
    assert debugger.names() == ["Pricing", "Invoice Paid"]
    options = page.locator("#source option").all_text_contents()
    assert options == ["All sources", f"{backend_id} (2)", f"{web_id} (4)"]

    page.locator("#search").fill("no such thing anywhere")
    expect(page.locator("#no-match")).to_be_visible()
    page.locator("#clear-filters").click()
    expect(debugger.rows).to_have_count(6)
    expect(page.locator("#no-match")).to_be_hidden()


def test_clicking_a_row_shows_the_stored_message_as_json(
    open_debugger: Callable[..., Debugger],
    client: trackline.Client,
    http: Http,
    collector: RunningCollector,
) -> None:
    """The detail view shows the full stored message (receivedAt, originalTimestamp, context,
    integrations...) as indented JSON, and its copy button puts that JSON on the clipboard."""
    client.track(
        "019mr8mf4r",
        "Item Purchased",
        {"revenue": 39.95, "shipping": "2-day"},
        context={"ip": "12.212.12.49"},
        integrations={"All": False, "Mixpanel": True},
    )
    debugger = open_debugger()
    page = debugger.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#events .row").first.click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    stored = http.events()[0]
    shown = page.locator("#json").text_content() or ""
    assert http.get(f"/api/events/{stored['messageId']}").json == stored
    assert json.loads(shown) == stored
    assert shown.startswith('{\n  "type": "track"')
    for key in ("receivedAt", "originalTimestamp", "context", "integrations", "sentAt"):
        assert f'"{key}"' in shown
    expect(page.locator("#detail-title")).to_have_text("Item Purchased")
    expect(page.locator("#detail-source")).to_have_text(source_of(collector, KEY))

    page.locator("#copy-json").click()
    expect(page.locator("#copy-json")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == shown

    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()


def test_detail_shows_a_browser_events_page_url_and_user_agent(
    open_debugger: Callable[..., Debugger], http: Http
) -> None:
    """An event from analytics.js shows its `context.page.url` and `context.userAgent` in the
    detail; a server event without them shows neither line."""
    agent = "Mozilla/5.0 (X11; Linux x86_64) <b>Chrome</b>"
    browser_event = {
        "type": "page",
        "name": "Pricing",
        "anonymousId": "anon-1",
        "writeKey": KEY,
        "context": {"page": {"url": "http://shop.test/pricing?plan=pro"}, "userAgent": agent},
    }
    answer = http.request(
        "POST", "/v1/p", json.dumps(browser_event).encode(), {"Content-Type": "text/plain"}
    )
    assert answer.status == 200
    http.post("/v1/track", {"type": "track", "event": "Server Side", "userId": "u"}, key=KEY)
    debugger = open_debugger()
    page = debugger.page
    expect(debugger.rows).to_have_count(2)
    page.locator("#events .row", has_text="Pricing").click()
    expect(page.locator("#detail-page")).to_have_text("http://shop.test/pricing?plan=pro")
    expect(page.locator("#detail-page-label")).to_be_visible()
    expect(page.locator("#detail-agent")).to_have_text(agent)
    page.locator("#events .row", has_text="Server Side").click()
    expect(page.locator("#detail-title")).to_have_text("Server Side")
    expect(page.locator("#detail-page")).to_be_hidden()
    expect(page.locator("#detail-page-label")).to_be_hidden()
    expect(page.locator("#detail-agent")).to_be_hidden()


def test_markup_in_values_is_shown_as_text_and_runs_nothing(
    open_debugger: Callable[..., Debugger], collector: RunningCollector, make_client: MakeClient
) -> None:
    """An event named `<img src=x onerror=alert(1)>` (and the same in the user id, a property,
    the write key) is displayed as those characters: no element, no dialog, no request."""
    debugger = open_debugger()
    page = debugger.page
    hostile = make_client(INJECTION, host=collector.url, sync=True)
    hostile.track(INJECTION, INJECTION, {INJECTION: INJECTION})
    expect(debugger.rows).to_have_count(1)
    assert debugger.names() == [INJECTION]
    expect(page.locator("#events .user")).to_have_text(INJECTION)
    page.locator("#events .row").click()
    expect(page.locator("#detail-title")).to_have_text(INJECTION)
    assert (page.locator("#json").text_content() or "").count(
        INJECTION
    ) == 4  # userId, event, property name and value
    page.locator("#search").fill(INJECTION)
    expect(debugger.rows).to_have_count(1)
    hostile_id = source_of(collector, INJECTION)
    assert hostile_id.startswith("~")  # a key starting with markup shows none of itself
    # The source list follows /api/stats, fetched after a quiet moment: slower on a busy machine.
    expect(page.locator("#source option").nth(1)).to_have_text(f"{hostile_id} (1)", timeout=15_000)
    page.wait_for_timeout(300)  # time for an onerror handler, had an image been created
    assert page.locator("img").count() == 0
    assert not [url for url in debugger.requests if url.rstrip("/").endswith("/x")]


def test_pause_holds_new_events_and_resume_catches_up(
    open_debugger: Callable[..., Debugger], client: trackline.Client
) -> None:
    """While paused the list does not change (the button counts what is waiting); resuming
    shows every event that arrived meanwhile, in order."""
    debugger = open_debugger()
    page = debugger.page
    client.track("u1", "First")
    expect(debugger.rows).to_have_count(1)
    pause = page.locator("#pause")
    pause.click()
    expect(page.locator("#status")).to_have_text("Paused")
    client.track("u1", "Second")
    client.track("u1", "Third")
    expect(pause).to_have_text("Resume (2 new)")
    assert debugger.names() == ["First"]
    pause.click()
    expect(debugger.rows).to_have_count(3)
    assert debugger.names() == ["Third", "Second", "First"]
    expect(pause).to_have_text("Pause")
    client.track("u1", "Fourth")
    expect(page.locator("#events .name").first).to_have_text("Fourth")


def _overflow(page: Page) -> int:
    """How many CSS pixels the document is wider than the window (0: no sideways scroll)."""
    width: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return width


def test_phone_sized_window_has_no_horizontal_overflow(
    open_debugger: Callable[..., Debugger], client: trackline.Client
) -> None:
    """On a 360 px wide phone, the empty state, a list of long values and the open detail
    all fit the width; the detail covers the list."""
    debugger = open_debugger(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = debugger.page
    expect(page.locator("#empty")).to_be_visible()
    assert _overflow(page) <= 0
    long = "x" * 300
    client.track(long, long, {"k": long})
    client.page(None, "Checkout " * 20, anonymous_id="a" * 80)
    expect(debugger.rows).to_have_count(2)
    assert _overflow(page) <= 0
    row = page.locator("#events .row").first.bounding_box()
    assert row is not None
    assert row["width"] <= 360
    page.locator("#events .row").nth(1).click()
    detail = page.locator("#detail").bounding_box()
    assert detail is not None
    assert (detail["x"], detail["width"]) == (0, 360)
    assert _overflow(page) <= 0
    page.locator("#close").click()
    expect(page.locator("#detail")).to_be_hidden()


def test_wide_window_shows_list_and_detail_side_by_side(
    open_debugger: Callable[..., Debugger], client: trackline.Client
) -> None:
    """On a wide screen the open event sits beside the list instead of covering it."""
    client.track("u1", "Item Purchased")
    debugger = open_debugger(viewport={"width": 1600, "height": 900})
    page = debugger.page
    page.locator("#events .row").first.click()
    expect(page.locator("#detail")).to_be_visible()
    row = page.locator("#events .row").first.bounding_box()
    detail = page.locator("#detail").bounding_box()
    assert row is not None
    assert detail is not None
    assert row["x"] + row["width"] <= detail["x"] + 1
    assert detail["width"] > 500
    assert _overflow(page) <= 0


def _luminance(css: str) -> float:
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css)[:3])

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def _contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_readable_in_light_and_dark_mode(
    open_debugger: Callable[..., Debugger], client: trackline.Client, scheme: str
) -> None:
    """The page follows the system colour scheme, and its text, muted text and type badges
    keep WCAG AA contrast (4.5:1) in both."""
    client.track("u1", "Item Purchased")
    client.page(None, "Login", anonymous_id="anon-1")
    debugger = open_debugger(color_scheme=scheme)
    page = debugger.page
    expect(debugger.rows).to_have_count(2)
    style = "(e, p) => getComputedStyle(e)[p]"
    body = page.locator("body")
    background = body.evaluate(style, "backgroundColor")
    assert (_luminance(background) < 0.05) is (scheme == "dark")
    for selector in ("body", "#events .time", "#events .source", "#events .anon"):
        colour = page.locator(selector).first.evaluate(style, "color")
        assert _contrast(colour, background) >= 4.5, selector
    for badge in page.locator("#types .badge").all():
        colours = [badge.evaluate(style, p) for p in ("color", "backgroundColor")]
        assert _contrast(*colours) >= 4.5, badge.text_content()


def test_with_a_read_token_the_page_asks_for_it_once(
    browser: Browser, db_path: Path, make_client: MakeClient
) -> None:
    """A collector with a read token shows a login form instead of the events; a wrong token
    is said to be wrong; the right one opens the live page, and the browser keeps a cookie
    that scripts cannot read (HttpOnly) and other sites' requests do not carry (Strict)."""
    token = "browser-read-token-31f7a9c2"
    with serve(db_path, read_token=token) as running:
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(running.url + "/")
        expect(page.locator("#token")).to_be_visible()
        assert page.locator("#events").count() == 0
        page.locator("#token").fill("not-the-token-at-all")
        page.locator("button[type=submit]").click()
        expect(page.locator("#failed")).to_be_visible()
        page.locator("#token").fill(token)
        page.locator("button[type=submit]").click()
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        make_client(KEY, host=running.url, sync=True).track("019mr8mf4r", "After Login")
        expect(page.locator("#events .name")).to_have_text(["After Login"])
        (cookie,) = context.cookies()
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        assert token not in cookie["value"]
        assert page.evaluate("document.cookie") == ""
        context.close()
        assert errors == []
