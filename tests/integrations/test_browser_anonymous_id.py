"""Server-side calls made while handling a request from a browser running analytics.js carry
that browser's anonymous id (its `ajs_anonymous_id` cookie) unless they name their own, in
every integration, so the browser's and the server's events join up under one visitor."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import path

import trackline
from tests.integrations.apps import django_app
from tests.integrations.serving import fetch, serve_asgi, serve_wsgi
from tests.support.capture import CaptureServer
from trackline.context import Scope, context, enter, leave
from trackline.errors import ConfigError, InvalidMessage
from trackline.integrations import asgi, wsgi

COOKIE = {"Cookie": "ajs_anonymous_id=%22b6a8e1c4-anon%22; ajs_user_id=%22user-7%22"}
ANON = "b6a8e1c4-anon"


def checkout_app(client: trackline.Client, errors: list[str]) -> Callable[..., Iterable[bytes]]:
    """`/` tracks with no id at all, `/user` with a user id, `/own` with its own anonymous id."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        where = environ["PATH_INFO"]
        try:
            if where == "/user":
                client.track("user-42", "Order Completed")
            elif where == "/own":
                client.track(event="Order Completed", anonymous_id="server-chosen")
            else:
                client.track(event="Order Completed")
        except InvalidMessage as error:
            errors.append(str(error))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def sent(client: trackline.Client, capture: CaptureServer) -> list[dict[str, Any]]:
    assert client.flush(5.0)
    return capture.delivered()


def test_a_call_without_ids_takes_the_browsers_anonymous_id(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """`track(event=...)` with no id inside a request from that browser is the browser's
    visitor; with a user id it carries both; its own anonymous id wins."""
    errors: list[str] = []
    with serve_wsgi(wsgi.TracklineMiddleware(checkout_app(client, errors))) as url:
        for where in ("/", "/user", "/own"):
            assert fetch(url + where, COOKIE)[0] == 200
    events = sent(client, capture)
    ids = [(e.get("userId"), e["anonymousId"]) for e in events]
    assert ids == [(None, ANON), ("user-42", ANON), (None, "server-chosen")]
    assert errors == []


def test_without_the_cookie_a_call_still_needs_an_id(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """No cookie, no default: a call with no id is refused as before."""
    errors: list[str] = []
    with serve_wsgi(wsgi.TracklineMiddleware(checkout_app(client, errors))) as url:
        fetch(url + "/")
        fetch(url + "/user")
    assert [("anonymousId" in e) for e in sent(client, capture)] == [False]
    assert errors == ["user_id: either user_id or anonymous_id is required"]


def test_it_can_be_turned_off(client: trackline.Client, capture: CaptureServer) -> None:
    errors: list[str] = []
    app = wsgi.TracklineMiddleware(checkout_app(client, errors), browser_anonymous_id=False)
    with serve_wsgi(app) as url:
        fetch(url + "/user", COOKIE)
    [event] = sent(client, capture)
    assert "anonymousId" not in event


def test_asgi_middleware_shares_it(client: trackline.Client, capture: CaptureServer) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        client.track(event="Order Completed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve_asgi(asgi.TracklineMiddleware(app)) as url:
        assert fetch(url + "/", COOKIE)[0] == 200
    [event] = sent(client, capture)
    assert event["anonymousId"] == ANON


def test_django_middleware_shares_it(capture: CaptureServer, default_client_cleanup: None) -> None:
    """Under Django (default client from settings) the view's call carries the cookie's id;
    `TRACKLINE_BROWSER_ANONYMOUS_ID = False` turns it off."""

    def view(request: HttpRequest) -> HttpResponse:
        trackline.track("user-42", "Order Completed")
        return HttpResponse("ok")

    urls = type("urls", (), {"urlpatterns": [path("checkout", view)]})
    configured = {"TRACKLINE_WRITE_KEY": "k", "TRACKLINE_HOST": capture.url, "ROOT_URLCONF": urls}
    with override_settings(**configured), serve_wsgi(django_app.make_application()) as url:
        fetch(f"{url}/checkout", COOKIE)
    with (
        override_settings(**configured, TRACKLINE_BROWSER_ANONYMOUS_ID=False),
        serve_wsgi(django_app.make_application()) as url,
    ):
        fetch(f"{url}/checkout", COOKIE)
    assert trackline.flush(5.0)
    assert [e.get("anonymousId") for e in capture.delivered()] == [ANON, None]


def test_a_wrong_setting_names_it() -> None:
    with (
        override_settings(TRACKLINE_BROWSER_ANONYMOUS_ID="yes"),
        pytest.raises(ConfigError, match="TRACKLINE_BROWSER_ANONYMOUS_ID"),
    ):
        django_app.make_application().load_middleware()
    with pytest.raises(ConfigError, match="browser_anonymous_id"):
        wsgi.TracklineMiddleware(checkout_app, browser_anonymous_id="yes")  # type: ignore[arg-type]


def test_nested_scopes_keep_the_anonymous_id(
    client: trackline.Client, capture: CaptureServer
) -> None:
    """A `trackline.context` block inside the request adds keys and keeps the visitor."""
    token = enter(Scope({"ip": "203.0.113.5"}, ANON))
    try:
        with context(campaign={"name": "spring"}):
            client.track(event="Order Completed")
    finally:
        leave(token)
    [event] = sent(client, capture)
    assert event["anonymousId"] == ANON
    assert event["context"]["ip"] == "203.0.113.5"
    assert event["context"]["campaign"] == {"name": "spring"}
