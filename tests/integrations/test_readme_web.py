"""The README's "Web frameworks" examples, and the same examples on the docs' framework guides,
run as written, served over real HTTP, and their events arrive with the request's context."""

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
from tests.test_readme import python_blocks
from tests.test_readme import run_example as run
from trackline.integrations.pages import PageView
from trackline.integrations.proxies import TrustedProxies
from trackline.integrations.request import from_environ

GUIDES = ("request-context", "django", "flask", "fastapi-starlette", "wsgi")
BLOCKS = {
    "README": python_blocks("Web frameworks"),
    "docs": [
        text for guide in GUIDES for text in docs_examples.python_blocks(f"guides/{guide}.md")
    ],
}
SOURCES = pytest.mark.parametrize("source", sorted(BLOCKS))


def block(marker: str, source: str) -> str:
    """The one example containing `marker` in `source` (the README, or the docs' guides)."""
    [found] = [text for text in BLOCKS[source] if marker in text]
    return found


@pytest.fixture
def readme_env(
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


@SOURCES
def test_by_hand(readme_env: CaptureServer, source: str) -> None:
    """The `with trackline.context(...)` example carries ip, userAgent and locale."""
    run(block("with trackline.context(", source))
    assert trackline.flush(5.0)
    [event] = readme_env.delivered()
    assert event["context"]["ip"] == "12.212.12.49"
    assert event["context"]["locale"] == "en-US"


@SOURCES
@pytest.mark.parametrize(
    ("marker", "serve", "app_name"),
    [
        ("app = Flask(__name__)", serve_wsgi, "app"),
        ("app = Starlette(", serve_asgi, "app"),
        ("def application(environ, start_response)", serve_wsgi, "application"),
    ],
)
def test_framework_examples(
    readme_env: CaptureServer, marker: str, serve: Any, app_name: str, source: str
) -> None:
    """Flask, Starlette and plain WSGI: POST /checkout tracks an event with its context."""
    app = run(block(marker, source))[app_name]
    with serve(app) as url:
        assert fetch(f"{url}/checkout", {"User-Agent": "readme"}, method="POST")[0] == 200
    context = checkout_context(readme_env)
    assert (context["ip"], context["userAgent"]) == ("127.0.0.1", "readme")
    assert context["page"]["url"] == f"{url}/checkout"


@SOURCES
def test_django_example(readme_env: CaptureServer, source: str) -> None:
    """The Django settings and view, routed at /checkout, track with the request's context."""
    settings = {k: v for k, v in run(block("# settings.py", source)).items() if k.isupper()}
    view = run(block("# views.py", source))["checkout"]
    urls = types.ModuleType("readme_urls")
    urls.urlpatterns = [path("checkout", view)]  # type: ignore[attr-defined]
    with (
        override_settings(**settings, ROOT_URLCONF=urls),
        serve_wsgi(django_app.make_application()) as url,
    ):
        assert fetch(f"{url}/checkout", {"User-Agent": "readme"}, method="POST")[0] == 200
    context = checkout_context(readme_env)
    assert (context["ip"], context["userAgent"]) == ("127.0.0.1", "readme")


@SOURCES
def test_page_filter_example(source: str) -> None:
    """The example filter accepts a 200 page and refuses /api/ paths and other statuses."""
    is_page = run(block("def is_page(", source))["is_page"]

    def view(path: str, status: int) -> PageView:
        environ = {"PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1"}
        return PageView(from_environ(environ, TrustedProxies()), status, "text/html")

    assert is_page(view("/pricing", 200))
    assert not is_page(view("/api/items", 200))
    assert not is_page(view("/pricing", 302))
