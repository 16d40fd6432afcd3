"""The debugger's HTTP side: the page and its files as the collector serves them, and what the
read API and the live stream give the page (row ids, sources, the source filter)."""

from __future__ import annotations

import html.parser
import re

import orjson
import pytest

from tests.collector.conftest import Http, message, source_of
from trackline.collector import RunningCollector
from trackline.collector.debugger import CONTENT_SECURITY_POLICY


def batch(*messages: object) -> dict[str, object]:
    return {"batch": list(messages)}


class _Links(html.parser.HTMLParser):
    """Every URL the page's markup refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("path", ["/", "/debugger"])
def test_page_is_served_with_a_content_security_policy(http: Http, path: str) -> None:
    """The page is HTML at / and /debugger, with a policy allowing only this origin's scripts,
    styles and requests."""
    answer = http.get(path)
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert b"<title>trackline debugger</title>" in answer.body


def test_page_files_are_served_and_local(http: Http) -> None:
    """Every file the page refers to is served by the collector itself, with its media type,
    and no file names another origin (nothing loads from the internet)."""
    page = http.get("/").body.decode()
    links = _Links()
    links.feed(page)
    local = [url for url in links.urls if not url.startswith("data:")]
    assert sorted(local) == ["debugger/app.js", "debugger/style.css"]
    types = {"debugger/app.js": "text/javascript", "debugger/style.css": "text/css"}
    texts = [page]
    for url in local:
        answer = http.get("/" + url)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith(types[url])
        texts.append(answer.body.decode())
    for text in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("www.w3.org", ""))
        assert "@import" not in text
        assert "@font-face" not in text


def test_unknown_debugger_path_is_a_json_404(http: Http) -> None:
    """Only the page's own files are served: no directory listing, no other package file."""
    answer = http.get("/debugger/__init__.py")
    assert answer.status == 404
    assert answer.json["code"] == "not_found"


def test_events_filter_by_source(http: Http, collector: RunningCollector) -> None:
    """`GET /api/events?source=KEYID` lists only the events sent with that write key; the raw
    key matches nothing (it is never stored)."""
    http.post("/v1/batch", batch(message(1), message(2)), key="web-frontend")
    http.post("/v1/batch", batch(message(3)), key="backend")
    web, backend = source_of(collector, "web-frontend"), source_of(collector, "backend")
    assert [e["messageId"] for e in http.events(f"?source={backend}")] == ["message-3"]
    assert [e["messageId"] for e in http.events(f"?source={web}")] == ["message-2", "message-1"]
    assert http.events("?source=backend") == []


def test_events_with_meta_carry_row_id_and_source(http: Http, collector: RunningCollector) -> None:
    """`meta=1` wraps each stored message with its row id (increasing) and its source's key
    id, newest first like the plain listing, whose messages it carries unchanged."""
    http.post("/v1/batch", batch(message(1), message(2)), key="web-frontend")
    http.post("/v1/batch", batch(message(3)), key='odd "key" here')
    plain = http.events()
    wrapped = http.events("?meta=1")
    assert [item["message"] for item in wrapped] == plain
    web, odd = source_of(collector, "web-frontend"), source_of(collector, 'odd "key" here')
    assert [item["source"] for item in wrapped] == [odd, web, web]
    assert web.startswith("web-~")
    assert odd.startswith("odd~")
    ids = [item["id"] for item in wrapped]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 3
    assert all(isinstance(i, int) for i in ids)
    assert [i["message"]["messageId"] for i in http.events(f"?meta=1&source={web}&limit=1")] == [
        "message-2"
    ]


@pytest.mark.parametrize("path", ["/api/events?meta=yes", "/api/stream?meta=2"])
def test_meta_must_be_a_flag(http: Http, path: str) -> None:
    """`meta` other than 1/0/true/false is a 400 naming the parameter."""
    answer = http.get(path)
    assert answer.status == 400
    assert answer.json["code"] == "invalid_parameter"
    assert "meta" in answer.json["message"]


def test_stream_with_meta_carries_row_id_and_source(
    collector: RunningCollector, http: Http
) -> None:
    """`GET /api/stream?meta=1` sends each new event as the listing with `meta=1` shows it:
    the same row id and source, so the page can merge the two."""
    stream = http.pool.request(
        "GET", collector.url + "/api/stream?meta=1", preload_content=False, timeout=5.0
    )
    assert stream.status == 200
    http.post("/v1/batch", batch(message(1)), key="web")
    http.post("/v1/batch", batch(message(2)), key="backend")
    text = b""
    for chunk in stream.stream(256, decode_content=False):
        text += chunk
        if text.count(b"}\n\n") >= 2:  # two whole frames
            break
    stream.release_conn()
    stream.close()
    frames = [f for f in text.decode().split("\n\n") if f.startswith("id:")]
    live = [orjson.loads(f.split("data: ", 1)[1]) for f in frames]
    assert [int(f.split("\n", 1)[0][4:]) for f in frames] == [item["id"] for item in live]
    assert list(reversed(http.events("?meta=1"))) == live
    sources = [source_of(collector, "web"), source_of(collector, "backend")]
    assert [item["source"] for item in live] == sources
