"""The Flask extension, served over real HTTP: config keys, context in views and teardown."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.integrations.apps.flask_app import create_app
from tests.integrations.serving import fetch, serve_wsgi
from tests.support.capture import CaptureServer
from trackline import ConfigError, flush
from trackline.integrations.flask import Trackline
from trackline.integrations.wsgi import TracklineMiddleware


@pytest.fixture
def config(capture: CaptureServer, default_client_cleanup: None) -> dict[str, Any]:
    return {"TRACKLINE_WRITE_KEY": "flask-key", "TRACKLINE_HOST": capture.url}


def delivered(capture: CaptureServer) -> list[dict[str, Any]]:
    assert flush(5.0)
    return capture.delivered()


def test_config_initialises_the_default_client_and_views_get_context(
    capture: CaptureServer, config: dict[str, Any]
) -> None:
    """TRACKLINE_* config keys configure `trackline.track`; views and teardown handlers see
    the request's context."""
    with serve_wsgi(create_app(config)) as url:
        fetch(f"{url}/hit/hats?ref=nav", {"User-Agent": "flask-agent", "Accept-Language": "pl"})
        fetch(f"{url}/teardown", {"User-Agent": "teardown-agent"})
    events = {e["event"]: e for e in delivered(capture)}
    assert capture.requests[0].write_key == "flask-key"
    assert "ip" not in events["App Loaded"]["context"]
    hit = events["Flask Hit"]["context"]
    assert (hit["ip"], hit["userAgent"], hit["locale"]) == ("127.0.0.1", "flask-agent", "pl")
    assert hit["page"] == {
        "path": "/hit/hats",
        "url": f"{url}/hit/hats?ref=nav",
        "search": "?ref=nav",
    }
    assert events["Teardown"]["context"]["userAgent"] == "teardown-agent"


def test_page_views_from_config(capture: CaptureServer, config: dict[str, Any]) -> None:
    """TRACKLINE_PAGE_VIEWS=True gives a page call for the HTML page only."""
    with serve_wsgi(create_app({**config, "TRACKLINE_PAGE_VIEWS": True})) as url:
        fetch(f"{url}/page")
        fetch(f"{url}/hit/x")
    pages = [e for e in delivered(capture) if e["type"] == "page"]
    assert [p["properties"]["path"] for p in pages] == ["/page"]


def test_init_app_later_and_only_once(config: dict[str, Any]) -> None:
    """`Trackline()` then `init_app(app)` wraps the app once, however often it is called."""
    app = Flask(__name__)
    app.config.update(config)
    extension = Trackline()
    extension.init_app(app)
    extension.init_app(app)
    assert isinstance(app.wsgi_app, TracklineMiddleware)
    assert not isinstance(app.wsgi_app.app, TracklineMiddleware)
    assert app.extensions["trackline"] is extension


def test_wrong_config_names_the_key(default_client_cleanup: None) -> None:
    """A wrong TRACKLINE_* value raises ConfigError naming the config key."""
    app = Flask(__name__)
    app.config.update(TRACKLINE_WRITE_KEY="k", TRACKLINE_TRUSTED_PROXIES=["not-an-ip"])
    with pytest.raises(ConfigError) as caught:
        Trackline(app)
    assert caught.value.option == "TRACKLINE_TRUSTED_PROXIES"
