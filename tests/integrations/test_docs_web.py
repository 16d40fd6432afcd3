"""The examples of the docs' request context and framework guides run as written, served over
real HTTP, and their events arrive with the request's context."""

from __future__ import annotations

import types
from typing import Any

import pytest
from django.test import override_settings
from django.urls import path

import trackline
from tests.integrations.apps import django_app
from tests.integrations.serving import fetch, serve_asgi, serve_wsgi
from tests.support import docs_examples
from tests.support.capture import CaptureServer
from tests.support.docs_examples import run_example as run
from trackline.integrations.pages import PageView
from trackline.integrations.proxies import TrustedProxies
from trackline.integrations.request import from_environ

GUIDES = ("request-context", "django", "flask", "fastapi-starlette", "wsgi")
BLOCKS = [text for guide in GUIDES for text in docs_examples.python_blocks(f"guides/{guide}.md")]


def block(marker: str) -> str:
    """The one example of the guides containing `marker`."""
    [found] = [text for text in BLOCKS if marker in text]
    return found


@pytest.fixture
def docs_env(
    capture: CaptureServer, monkeypatch: pytest.MonkeyPatch, default_client_cleanup: None
) -> CaptureServer:
    """The examples' client sends to the capture server (TRACKLINE_HOST); the example that
    does not configure one gets its write key from TRACKLINE_WRITE_KEY."""
    monkeypatch.setenv("TRACKLINE_HOST", capture.url)
    monkeypatch.setenv("TRACKLINE_WRITE_KEY", "YOUR_WRITE_KEY")
    return capture


def checkout_context(capture: CaptureServer) -> dict[str, Any]:
    assert trackline.flush(5.0)
    [event] = [e for e in capture.delivered() if e.get("event") == "Order Completed"]
    assert capture.requests[-1].write_key == "YOUR_WRITE_KEY"
    return dict(event["context"])


def test_by_hand(docs_env: CaptureServer) -> None:
    """The `with trackline.context(...)` example carries ip, userAgent and locale."""
    run(block("with trackline.context("))
    assert trackline.flush(5.0)
    [event] = docs_env.delivered()
    assert event["context"]["ip"] == "12.212.12.49"
    assert event["context"]["locale"] == "en-US"


@pytest.mark.parametrize(
    ("marker", "serve", "app_name"),
    [
        ("app = Flask(__name__)", serve_wsgi, "app"),
        ("app = Starlette(", serve_asgi, "app"),
        ("def application(environ, start_response)", serve_wsgi, "application"),
    ],
)
def test_framework_examples(
    docs_env: CaptureServer, marker: str, serve: Any, app_name: str
) -> None:
    """Flask, Starlette and plain WSGI: POST /checkout tracks an event with its context."""
    app = run(block(marker))[app_name]
    with serve(app) as url:
        assert fetch(f"{url}/checkout", {"User-Agent": "docs"}, method="POST")[0] == 200
    context = checkout_context(docs_env)
    assert (context["ip"], context["userAgent"]) == ("127.0.0.1", "docs")
    assert context["page"]["url"] == f"{url}/checkout"


def test_django_example(docs_env: CaptureServer) -> None:
    """The Django settings and view, routed at /checkout, track with the request's context."""
    settings = {k: v for k, v in run(block("# settings.py")).items() if k.isupper()}
    view = run(block("# views.py"))["checkout"]
    urls = types.ModuleType("docs_urls")
    urls.urlpatterns = [path("checkout", view)]  # type: ignore[attr-defined]
    with (
        override_settings(**settings, ROOT_URLCONF=urls),
        serve_wsgi(django_app.make_application()) as url,
    ):
        assert fetch(f"{url}/checkout", {"User-Agent": "docs"}, method="POST")[0] == 200
    context = checkout_context(docs_env)
    assert (context["ip"], context["userAgent"]) == ("127.0.0.1", "docs")


def test_page_filter_example() -> None:
    """The example filter accepts a 200 page and refuses /api/ paths and other statuses."""
    is_page = run(block("def is_page("))["is_page"]

    def view(path: str, status: int) -> PageView:
        environ = {"PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1"}
        return PageView(from_environ(environ, TrustedProxies()), status, "text/html")

    assert is_page(view("/pricing", 200))
    assert not is_page(view("/api/items", 200))
    assert not is_page(view("/pricing", 302))
