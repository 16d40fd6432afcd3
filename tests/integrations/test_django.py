"""The Django middleware, served over real HTTP: settings, sync and async stacks, page calls."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.integrations.apps import django_app
from tests.integrations.serving import fetch, serve_asgi, serve_wsgi
from tests.support.capture import CaptureServer
from trackline import ConfigError, flush


@pytest.fixture
def settings_for(capture: CaptureServer, default_client_cleanup: None) -> dict[str, Any]:
    """Settings pointing the default client at the capture server."""
    return {"TRACKLINE_WRITE_KEY": "django-key", "TRACKLINE_HOST": capture.url}


def delivered(capture: CaptureServer) -> list[dict[str, Any]]:
    assert flush(5.0)
    return capture.delivered()


def test_settings_initialise_the_default_client_and_requests_give_context(
    capture: CaptureServer, settings_for: dict[str, Any]
) -> None:
    """TRACKLINE_WRITE_KEY/HOST configure `trackline.track`; a view's event carries the
    request's ip, userAgent, locale and page."""
    with override_settings(**settings_for), serve_wsgi(django_app.make_application()) as url:
        status, _ = fetch(
            f"{url}/hit/shoes?size=42",
            {"User-Agent": "Mozilla/5.0 (Windows)", "Accept-Language": "sv-SE"},
        )
    assert status == 200
    [event] = delivered(capture)
    assert capture.requests[0].write_key == "django-key"
    assert event["context"]["ip"] == "127.0.0.1"
    assert event["context"]["userAgent"] == "Mozilla/5.0 (Windows)"
    assert event["context"]["locale"] == "sv-SE"
    assert event["context"]["page"] == {
        "path": "/hit/shoes",
        "url": f"{url}/hit/shoes?size=42",
        "search": "?size=42",
    }


def test_async_and_sync_views_under_asgi_carry_context(
    capture: CaptureServer, settings_for: dict[str, Any]
) -> None:
    """Under Django's ASGI handler the middleware runs async; async views and sync views
    (run in a thread by Django) both see the request's context."""
    with override_settings(**settings_for), serve_asgi(django_app.make_asgi_application()) as url:
        assert fetch(f"{url}/async-hit", {"User-Agent": "async-agent"})[0] == 200
        assert fetch(f"{url}/hit/caf%C3%A9", {"User-Agent": "sync-agent"})[0] == 200
    events = {e["event"]: e["context"] for e in delivered(capture)}
    assert events["Django Async Hit"]["userAgent"] == "async-agent"
    assert events["Django Async Hit"]["page"]["path"] == "/async-hit"
    assert events["Django Hit"]["userAgent"] == "sync-agent"
    assert events["Django Hit"]["page"]["path"] == "/hit/caf%C3%A9"


def test_streamed_bodies_keep_the_context(
    capture: CaptureServer, settings_for: dict[str, Any]
) -> None:
    """A StreamingHttpResponse is iterated by the server after the middleware returned; events
    tracked while it is generated still carry the request's context, under WSGI (sync body)
    and ASGI (async body)."""
    with override_settings(**settings_for):
        with serve_wsgi(django_app.make_application()) as url:
            assert fetch(f"{url}/stream", {"User-Agent": "wsgi-agent"}) == (200, b"id\n1\n")
        with serve_asgi(django_app.make_asgi_application()) as url:
            assert fetch(f"{url}/async-stream", {"User-Agent": "asgi-agent"})[1] == b"id\n1\n"
    events = {e["event"]: e["context"] for e in delivered(capture)}
    assert events["Export Streamed"]["userAgent"] == "wsgi-agent"
    assert events["Export Streamed"]["page"]["path"] == "/stream"
    assert events["Async Export Streamed"]["userAgent"] == "asgi-agent"


def test_page_views_carry_the_logged_in_user(
    capture: CaptureServer, settings_for: dict[str, Any]
) -> None:
    """TRACKLINE_PAGE_VIEWS makes a page call per HTML page, with the logged-in user's pk as
    user_id; plain-text responses are not pages."""
    with (
        override_settings(**settings_for, TRACKLINE_PAGE_VIEWS=True),
        serve_wsgi(django_app.make_application()) as url,
    ):
        fetch(f"{url}/page", {"X-User": "42"})
        fetch(f"{url}/page")
        fetch(f"{url}/hit/x")
    pages = [e for e in delivered(capture) if e["type"] == "page"]
    assert len(pages) == 2
    assert pages[0]["userId"] == "42"
    assert "userId" not in pages[1]
    assert pages[1]["anonymousId"]
    assert all(p["properties"]["path"] == "/page" for p in pages)


def test_page_filter_setting_takes_a_dotted_path(
    capture: CaptureServer, settings_for: dict[str, Any]
) -> None:
    """TRACKLINE_PAGE_FILTER may name the filter by dotted path."""
    with (
        override_settings(
            **settings_for,
            TRACKLINE_PAGE_VIEWS=True,
            TRACKLINE_PAGE_FILTER="tests.integrations.test_django.text_only",
        ),
        serve_wsgi(django_app.make_application()) as url,
    ):
        fetch(f"{url}/page")
        fetch(f"{url}/hit/x")
    pages = [e for e in delivered(capture) if e["type"] == "page"]
    assert [p["properties"]["path"] for p in pages] == ["/hit/x"]


def text_only(view: Any) -> bool:
    return str(view.content_type).startswith("text/plain")


def test_trusted_proxies_setting(capture: CaptureServer, settings_for: dict[str, Any]) -> None:
    """TRACKLINE_TRUSTED_PROXIES makes X-Forwarded-For from those proxies count."""
    with (
        override_settings(**settings_for, TRACKLINE_TRUSTED_PROXIES=["127.0.0.0/8"]),
        serve_wsgi(django_app.make_application()) as url,
    ):
        fetch(f"{url}/hit/x", {"X-Forwarded-For": "198.51.100.23"})
    [event] = delivered(capture)
    assert event["context"]["ip"] == "198.51.100.23"


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"TRACKLINE_TRUSTED_PROXIES": "10.0.0.1"}, "TRACKLINE_TRUSTED_PROXIES"),
        ({"TRACKLINE_PAGE_VIEWS": "yes"}, "TRACKLINE_PAGE_VIEWS"),
        ({"TRACKLINE_PAGE_FILTER": "tests.nowhere.nothing"}, "TRACKLINE_PAGE_FILTER"),
        ({"TRACKLINE_OPTIONS": {"flush_at": 0}}, "TRACKLINE_OPTIONS"),
        ({"TRACKLINE_OPTIONS": {"no_such_option": 1}}, "TRACKLINE_OPTIONS"),
        ({"TRACKLINE_HOST": "ftp://x"}, "TRACKLINE_HOST"),
    ],
)
def test_wrong_settings_raise_naming_the_setting(
    settings: dict[str, Any], name: str, default_client_cleanup: None
) -> None:
    """A wrong TRACKLINE_* value fails at startup with a ConfigError naming that setting."""
    with (
        override_settings(TRACKLINE_WRITE_KEY="k", **settings),
        pytest.raises(ConfigError) as caught,
    ):
        django_app.make_application()
    assert caught.value.option == name
