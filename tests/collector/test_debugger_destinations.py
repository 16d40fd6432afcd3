"""The debugger's destinations in a real headless Chromium: a panel with each destination's
queue, kept current; an event's delivery per destination (like Segment's Event Delivery view),
updated as it changes; and nothing of either on a collector without destinations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.collector.conftest import Http
from tests.collector.destinations.conftest import FAST, destinations, post, webhook
from tests.collector.test_debugger_browser import browser  # noqa: F401 (a fixture)
from tests.support.capture import CaptureServer, Reply
from trackline.collector import RunningCollector
from trackline.collector import start as trackline_start


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[str], Page]]:  # noqa: F811
    """Open a collector's page; at the end, no script error and no request elsewhere."""
    opened: list[tuple[Page, str, list[str], list[str]]] = []

    def open_url(url: str) -> Page:
        page = browser.new_context().new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        opened.append((page, url, errors, requests))
        return page

    yield open_url
    for page, url, errors, requests in opened:
        page.context.close()
        assert errors == []
        assert [r for r in requests if not r.startswith((url + "/", "data:"))] == []


@pytest.fixture
def receivers() -> Iterator[tuple[CaptureServer, CaptureServer]]:
    with CaptureServer() as good, CaptureServer() as picky:
        picky.rule = lambda body: Reply(400, body=b"no thanks") if b"refuse-me" in body else None
        yield good, picky


@pytest.fixture
def collector_with(tmp_path: Path) -> Iterator[Callable[..., RunningCollector]]:
    """Start a collector with these destination tables; it stops after the pages closed
    (tests ask for this fixture before `open_page`), so no page polls a stopped collector."""
    started: list[RunningCollector] = []

    def start(*tables: dict[str, Any]) -> RunningCollector:
        running = trackline_start(tmp_path / "events.sqlite3", destinations=destinations(*tables))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def card(page: Page, name: str) -> Any:
    return page.locator(f"#destination-list .destination[data-name='{name}']")


def test_the_panel_shows_each_destinations_queue_live(
    tmp_path: Path, collector_with: Any, open_page: Callable[[str], Page], receivers: Any
) -> None:
    good, picky = receivers
    collector = collector_with(
        webhook("Hook", good),
        webhook("Picky", picky, **FAST),
        {"name": "Archive", "kind": "file", "path": str(tmp_path / "x"), "enabled": False},
    )
    page = open_page(collector.url)
    expect(page.locator("#destinations")).to_be_visible()
    expect(page.locator("#destination-list .destination")).to_have_count(3)
    expect(card(page, "Archive")).to_have_attribute("data-state", "off")
    post(
        Http(collector.url),
        [
            {"type": "track", "userId": "u", "event": "A", "messageId": "m-1"},
            {"type": "track", "userId": "v", "event": "refuse-me", "messageId": "m-2"},
        ],
    )
    expect(card(page, "Hook").locator("[data-count='delivered']")).to_have_text("2")
    expect(card(page, "Picky").locator("[data-count='failed']")).to_have_text("1")
    expect(card(page, "Picky")).to_have_attribute("data-state", "failed")
    expect(card(page, "Picky").locator(".destination-error")).to_have_text("HTTP 400: no thanks")
    expect(card(page, "Hook")).to_have_attribute("data-state", "ok")


def test_an_events_delivery_shows_each_destination_and_follows_changes(
    collector_with: Any, open_page: Callable[[str], Page], receivers: Any
) -> None:
    good, picky = receivers
    good.script(Reply(503), Reply(503))
    slow = {**FAST, "backoff_base": 1.0, "backoff_cap": 1.5}
    collector = collector_with(webhook("Hook", good, **slow), webhook("Picky", picky, **FAST))
    page = open_page(collector.url)
    post(
        Http(collector.url),
        [{"type": "track", "userId": "u", "event": "refuse-me", "messageId": "m-1"}],
    )
    page.locator("#events .row").first.click()
    rows = page.locator("#delivery-rows tr")
    expect(rows).to_have_count(2)
    picky_row = page.locator("#delivery-rows tr[data-destination='Picky']")
    expect(picky_row.locator(".status-badge")).to_have_text("Failed")
    expect(picky_row.locator(".delivery-error")).to_have_text("HTTP 400: no thanks")
    expect(picky_row.locator(".attempts")).to_have_text("1")
    hook_row = page.locator("#delivery-rows tr[data-destination='Hook']")
    expect(hook_row.locator(".status-badge")).to_have_text("Retrying")
    expect(hook_row.locator(".status-badge")).to_have_text("Delivered", timeout=15_000)
    expect(hook_row.locator(".attempts")).to_have_text("3")
    expect(hook_row.locator("time")).to_have_text("just now")


def test_an_event_routed_nowhere_says_why(
    collector_with: Any, open_page: Callable[[str], Page], receivers: Any
) -> None:
    good, _ = receivers
    collector = collector_with(webhook("Hook", good))
    page = open_page(collector.url)
    post(
        Http(collector.url),
        [
            {"type": "track", "userId": "u", "event": "Off", "integrations": {"All": False}},
            {"type": "track", "userId": "u", "event": "Malformed", "integrations": ["Hook"]},
        ],
    )
    expect(page.locator("#events .row")).to_have_count(2)
    # Event names with letters beyond hex digits: a row's key id (k~<hex>) never contains them.
    page.locator("#events .row", has_text="Malformed").click()
    expect(page.locator("#delivery-note")).to_have_text(
        "integrations is not an object: routed nowhere"
    )
    expect(page.locator("#delivery-table")).to_be_hidden()
    page.locator("#events .row", has_text="Off").click()
    expect(page.locator("#delivery-note")).to_have_text("Not routed to any destination.")


def test_without_destinations_neither_panel_nor_delivery_shows(
    collector_with: Any, open_page: Callable[[str], Page]
) -> None:
    collector = collector_with()
    page = open_page(collector.url)
    post(Http(collector.url), [{"type": "track", "userId": "u", "event": "A"}])
    page.locator("#events .row").first.click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#destinations")).to_be_hidden()
    expect(page.locator("#delivery")).to_be_hidden()
