"""The analytics.js loader in templates: Django's `{% trackline_snippet %}` and Flask's
`trackline_snippet()` render it from the `TRACKLINE_*` settings, unescaped, with the
template's arguments and CSP nonce."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.template import engines
from django.test import override_settings
from flask import Flask, render_template_string

import tests.integrations.apps.django_app  # noqa: F401  (configures Django)
from trackline.errors import ConfigError
from trackline.integrations.flask import Trackline

COLLECTOR = "http://127.0.0.1:8765"


def loader_arguments(markup: str) -> list[Any]:
    """The JSON values the rendered loader passes to its function: key, src, cdn, options,
    nonce, page, ..."""
    assert markup.count("<script") == 1
    call = markup.rsplit("})(window, document, ", 1)[1].rsplit(");", 1)[0]
    return list(json.loads(f"[{call}]"))


def django_render(source: str, **context: Any) -> str:
    return str(engines["django"].from_string(source).render(context))


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKLINE_WRITE_KEY", raising=False)
    monkeypatch.delenv("TRACKLINE_HOST", raising=False)


@override_settings(TRACKLINE_WRITE_KEY="server-key", TRACKLINE_HOST=COLLECTOR)
def test_django_tag_renders_the_loader_from_settings(no_env: None) -> None:
    markup = django_render("{% load trackline %}<head>{% trackline_snippet %}</head>")
    assert markup.startswith("<head><script>")
    key, src, cdn, options, nonce, page = loader_arguments(markup)[:6]
    assert (key, cdn, nonce, page) == ("server-key", COLLECTOR, None, True)
    assert src == f"{COLLECTOR}/analytics.js/v1/server-key/analytics.min.js"
    assert options["integrations"]["Segment.io"]["apiHost"] == "127.0.0.1:8765/v1"


@override_settings(
    TRACKLINE_WRITE_KEY="server-key",
    TRACKLINE_BROWSER_WRITE_KEY="browser-key",
    TRACKLINE_BROWSER_CDN="https://cdn.example.com",
)
def test_django_tag_prefers_the_browser_settings_and_arguments(no_env: None) -> None:
    markup = django_render('{% load trackline %}{% trackline_snippet page=False nonce="n0nce" %}')
    key, src, _, _, nonce, page = loader_arguments(markup)[:6]
    assert (key, nonce, page) == ("browser-key", "n0nce", False)
    assert src.startswith("https://cdn.example.com/")
    assert '<script nonce="n0nce">' in markup


@override_settings(TRACKLINE_WRITE_KEY="k")
def test_django_tag_takes_the_csp_nonce_of_the_template(no_env: None) -> None:
    """Django's `csp_nonce` context variable, or django-csp's `request.csp_nonce`."""
    markup = django_render("{% load trackline %}{% trackline_snippet %}", csp_nonce="ctx")
    assert loader_arguments(markup)[4] == "ctx"
    request = type("Request", (), {"csp_nonce": "req"})()
    markup = django_render("{% load trackline %}{% trackline_snippet %}", request=request)
    assert loader_arguments(markup)[4] == "req"


@override_settings(TRACKLINE_WRITE_KEY="</script><script>alert(1)//")
def test_django_tag_output_stays_one_element(no_env: None) -> None:
    markup = django_render("{% load trackline %}{% trackline_snippet %}")
    assert markup.count("<script") == 1
    assert loader_arguments(markup)[0] == "</script><script>alert(1)//"


def test_without_a_write_key_the_tag_names_the_settings(no_env: None) -> None:
    with pytest.raises(ConfigError, match="TRACKLINE_BROWSER_WRITE_KEY or TRACKLINE_WRITE_KEY"):
        django_render("{% load trackline %}{% trackline_snippet %}")


@override_settings(TRACKLINE_WRITE_KEY="k", TRACKLINE_HOST="not a url")
def test_a_wrong_setting_is_named(no_env: None) -> None:
    with pytest.raises(ConfigError, match=r"^TRACKLINE_HOST: "):
        django_render("{% load trackline %}{% trackline_snippet %}")


def flask_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    Trackline(app)
    return app


def test_flask_global_renders_the_loader_from_config(
    no_env: None, default_client_cleanup: None
) -> None:
    app = flask_app(TRACKLINE_WRITE_KEY="flask-key", TRACKLINE_HOST=COLLECTOR)
    with app.app_context():
        markup = render_template_string("<head>{{ trackline_snippet() }}</head>")
        custom = render_template_string("{{ trackline_snippet(page=False, nonce='abc') }}")
    assert markup.startswith("<head><script>")
    key, _, cdn, _, nonce, page = loader_arguments(markup)[:6]
    assert (key, cdn, nonce, page) == ("flask-key", COLLECTOR, None, True)
    assert loader_arguments(custom)[4:6] == ["abc", False]


def test_flask_global_falls_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, default_client_cleanup: None
) -> None:
    """With neither key in the config, the environment's `TRACKLINE_*` (which the default
    client reads too) are used."""
    monkeypatch.setenv("TRACKLINE_WRITE_KEY", "env-key")
    monkeypatch.setenv("TRACKLINE_HOST", COLLECTOR)
    app = flask_app()
    with app.app_context():
        markup = render_template_string("{{ trackline_snippet() }}")
    key, _, cdn = loader_arguments(markup)[:3]
    assert (key, cdn) == ("env-key", COLLECTOR)
