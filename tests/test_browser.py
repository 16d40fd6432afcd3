"""The analytics.js loader `trackline.browser.snippet`: what it loads from where, and that no
value can escape its `<script>` element. (It runs in Chromium in tests/browser/.)"""

from __future__ import annotations

import html.parser
import json
import re

import pytest

from trackline.browser import SEGMENT_CDN, Snippet, script_literal, segment_io_options, snippet
from trackline.errors import ConfigError


class _Elements(html.parser.HTMLParser):
    """Every start tag, end tag and text run an HTML parser sees, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(("start", (tag, dict(attrs))))

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.parts.append(("data", data))

    def handle_comment(self, data: str) -> None:
        self.parts.append(("comment", data))


def parsed(markup: str) -> list[tuple[str, object]]:
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser.parts


def literal(markup: str, name: str) -> object:
    """The JSON value the loader passes as argument `name` (they are in a fixed order)."""
    order = ["key", "src", "cdn", "options", "nonce", "page", "events", "methods"]
    call = markup.rsplit("})(window, document, ", 1)[1].rsplit(");", 1)[0]
    values = json.loads(f"[{call}]")
    return values[order.index(name)]


def test_one_script_element_and_nothing_else() -> None:
    """The snippet is exactly one script element: start tag, code, end tag."""
    parts = parsed(snippet("KEY"))
    assert [kind for kind, _ in parts] == ["start", "data", "end"]
    assert parts[0] == ("start", ("script", {}))


@pytest.mark.parametrize(
    "hostile",
    [
        "</script><script>alert(1)</script>",
        "</SCRIPT ><img src=x onerror=alert(1)>",
        "<!--<script>",
        "a\u2028b\u2029c",
        "&lt;/script&gt;",
    ],
)
def test_no_value_can_close_the_element(hostile: str) -> None:
    """A write key, host path or option holding `</script>`, a comment opener or line
    separators stays one script element, and the values reach the code unchanged."""
    markup = snippet(
        hostile,
        host=f"https://collector.test/{hostile}",
        options={"integrations": {hostile: True}},
    )
    parts = parsed(markup)
    assert [kind for kind, _ in parts] == ["start", "data", "end"]
    code = markup.split(">", 1)[1].rsplit("</script>", 1)[0]
    assert "<" not in code
    assert ">" not in code
    assert "\u2028" not in code
    assert literal(markup, "key") == hostile
    assert hostile in literal(markup, "options")["integrations"]  # type: ignore[index,operator]


def test_nonce_is_an_escaped_attribute_and_reaches_the_loaded_script() -> None:
    """The CSP nonce goes on the element (escaped) and to the script element it adds."""
    markup = snippet("KEY", nonce='abc"><script>')
    assert parsed(markup)[0] == ("start", ("script", {"nonce": 'abc"><script>'}))
    assert literal(markup, "nonce") == 'abc"><script>'
    assert "s.nonce = nonce" in markup
    assert literal(snippet("KEY"), "nonce") is None


def test_host_sends_events_there_and_loads_from_there() -> None:
    """With a collector as `host`, events go to its `/v1` and analytics.js and its settings
    come from it too (the collector serves both)."""
    markup = snippet("KEY", host="http://127.0.0.1:8765")
    assert literal(markup, "src") == "http://127.0.0.1:8765/analytics.js/v1/KEY/analytics.min.js"
    assert literal(markup, "cdn") == "http://127.0.0.1:8765"
    assert literal(markup, "options") == {
        "integrations": {"Segment.io": {"apiHost": "127.0.0.1:8765/v1", "protocol": "http"}}
    }


def test_cdn_apart_from_host() -> None:
    markup = snippet("KEY", host="https://events.example.com/", cdn="https://cdn.example.com/js")
    assert (
        literal(markup, "src") == "https://cdn.example.com/js/analytics.js/v1/KEY/analytics.min.js"
    )
    options = literal(markup, "options")
    assert options["integrations"]["Segment.io"]["apiHost"] == "events.example.com/v1"  # type: ignore[index]


def test_defaults_are_segments() -> None:
    """With neither host nor cdn, analytics.js and its settings come from Segment's CDN."""
    markup = snippet("KEY")
    assert literal(markup, "src") == f"{SEGMENT_CDN}/analytics.js/v1/KEY/analytics.min.js"
    assert literal(markup, "options") == {}


def test_write_key_is_quoted_in_the_url() -> None:
    assert literal(snippet("a/b c"), "src").endswith("/v1/a%2Fb%20c/analytics.min.js")  # type: ignore[union-attr]


def test_own_segment_io_options_win_and_false_stays_off() -> None:
    options = {"integrations": {"Segment.io": {"protocol": "https", "deliveryStrategy": {}}}}
    markup = snippet("KEY", host="http://127.0.0.1:8765", options=options)
    segment = literal(markup, "options")["integrations"]["Segment.io"]  # type: ignore[index]
    assert segment == {"apiHost": "127.0.0.1:8765/v1", "protocol": "https", "deliveryStrategy": {}}
    off = snippet(
        "KEY", host="http://127.0.0.1:8765", options={"integrations": {"Segment.io": False}}
    )
    assert literal(off, "options") == {"integrations": {"Segment.io": False}}


def test_page_call_is_optional() -> None:
    assert literal(snippet("KEY"), "page") is True
    assert literal(snippet("KEY", page=False), "page") is False


def test_snippet_is_safe_markup_for_templates() -> None:
    """Jinja and Django insert a value with `__html__` as it is."""
    markup = snippet("KEY")
    assert isinstance(markup, Snippet)
    assert isinstance(markup, str)
    assert markup.__html__() == str(markup)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"write_key": ""}, "write_key"),
        ({"write_key": None}, "write_key"),
        ({"host": "127.0.0.1:8765"}, "host"),
        ({"host": "ftp://x"}, "host"),
        ({"host": "http://x/?q=1"}, "host"),
        ({"cdn": "//cdn.example.com"}, "cdn"),
        ({"page": "yes"}, "page"),
        ({"nonce": ""}, "nonce"),
        ({"options": [1]}, "options"),
        ({"options": {"x": float("nan")}}, "options"),
    ],
)
def test_wrong_arguments_name_the_field(arguments: dict[str, object], field: str) -> None:
    call = {"write_key": "KEY", **arguments}
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        snippet(**call)  # type: ignore[arg-type]


def test_script_literal_escapes_markup_characters() -> None:
    assert script_literal("</script>&") == '"\\u003c/script\\u003e\\u0026"'
    assert json.loads(script_literal("</script>&")) == "</script>&"


def test_segment_io_options_keep_a_path_prefix() -> None:
    assert segment_io_options("https://proxy.example.com/segment/") == {
        "apiHost": "proxy.example.com/segment/v1",
        "protocol": "https",
    }


def test_the_stub_queues_every_method_with_page_context_for_events() -> None:
    """The stub knows analytics.js's methods; the six event calls get the page context."""
    markup = snippet("KEY")
    assert literal(markup, "events") == ["track", "page", "identify", "group", "alias", "screen"]
    assert {"ready", "reset", "setAnonymousId", "trackLink"} <= set(literal(markup, "methods"))  # type: ignore[arg-type]
    assert re.search(r'__t: "bpc"', markup)
