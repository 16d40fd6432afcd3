"""What analytics.js needs from the collector, over real HTTP: its short ingest routes with the
bodies it sends, its settings object, the library file, and CORS for the allowed origins only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.collector.conftest import Http, emptied
from trackline.collector import RunningCollector, serve
from trackline.collector.access import Origins, normalise_origin
from trackline.collector.cors import ALLOWED_HEADERS

SHOP = "http://shop.test:3000"
ELSEWHERE = "http://elsewhere.test"
KEY = "browser-key"
CHUNK = "queryString.bundle.34b193ada8fe288d1bd1.js"

SHORT = {
    "t": {"type": "track", "event": "Item Viewed", "anonymousId": "anon-1"},
    "p": {"type": "page", "name": "Home", "anonymousId": "anon-1"},
    "i": {"type": "identify", "userId": "u-1", "traits": {"email": "a@example.com"}},
    "g": {"type": "group", "groupId": "g-1", "userId": "u-1"},
    "a": {"type": "alias", "previousId": "anon-1", "userId": "u-1"},
    "s": {"type": "screen", "name": "Cart", "anonymousId": "anon-1"},
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in analytics.js file, with a lazy chunk and a file that is not one beside it."""
    folder = tmp_path_factory.mktemp("analytics-js")
    (folder / "standalone.js").write_text("window.loaded = true;")
    (folder / CHUNK).write_text("window.chunk = true;")
    (folder / "secret.txt").write_text("not served")
    return folder / "standalone.js"


@pytest.fixture(scope="module")
def browser_collector(
    tmp_path_factory: pytest.TempPathFactory, library: Path
) -> Iterator[RunningCollector]:
    """A collector taking only KEY, open to pages at SHOP, serving the stand-in library."""
    path = tmp_path_factory.mktemp("browser-collector") / "events.sqlite3"
    with serve(path, write_keys=[KEY], allow_origins=[SHOP], analytics_js=library) as running:
        yield running


@pytest.fixture
def web(browser_collector: RunningCollector) -> Iterator[Http]:
    with emptied(browser_collector) as client:
        yield client


def post_like_analytics_js(
    web: Http, path: str, message: dict[str, Any], content_type: str, **headers: str
) -> Any:
    """A POST as analytics.js makes it: the key inside the JSON body, no Authorization."""
    body = json.dumps({**message, "writeKey": KEY}).encode()
    return web.request("POST", path, body, {"Content-Type": content_type, **headers})


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
@pytest.mark.parametrize("letter", sorted(SHORT))
def test_every_short_route_stores_its_type(web: Http, letter: str, content_type: str) -> None:
    """`/v1/t`, `/p`, `/i`, `/g`, `/a`, `/s` each store one message of their type, from a
    text/plain or JSON body with the write key inside it."""
    answer = post_like_analytics_js(web, f"/v1/{letter}", SHORT[letter], content_type)
    assert answer.status == 200, answer.body
    assert answer.json == {"accepted": 1, "duplicates": 0, "rejected": []}
    [event] = web.events()
    assert event["type"] == SHORT[letter]["type"]
    assert "writeKey" not in event


@pytest.mark.parametrize("letter", sorted(SHORT))
def test_short_route_implies_its_type(web: Http, letter: str) -> None:
    """A message without `type` takes its route's; one of another type is rejected."""
    message = {k: v for k, v in SHORT[letter].items() if k != "type"}
    assert post_like_analytics_js(web, f"/v1/{letter}", message, "text/plain").status == 200
    [event] = web.events()
    assert event["type"] == SHORT[letter]["type"]
    other = "page" if letter != "p" else "track"
    answer = post_like_analytics_js(web, f"/v1/{letter}", {**message, "type": other}, "text/plain")
    assert answer.json["rejected"][0]["code"] == "invalid_type"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_batch_route_b_stores_a_batch(web: Http, content_type: str) -> None:
    """`/v1/b` takes analytics.js's batch body: `{writeKey, batch, sentAt}`."""
    body = {"writeKey": KEY, "sentAt": "2026-01-01T00:00:00.000Z", "batch": list(SHORT.values())}
    answer = web.request("POST", "/v1/b", json.dumps(body).encode(), {"Content-Type": content_type})
    assert answer.json == {"accepted": 6, "duplicates": 0, "rejected": []}
    assert sorted(e["type"] for e in web.events()) == sorted(m["type"] for m in SHORT.values())


def test_short_routes_refuse_a_wrong_key(web: Http) -> None:
    """The key in the body is checked like any other: a wrong one is 401, nothing stored."""
    body = json.dumps({**SHORT["t"], "writeKey": "wrong"}).encode()
    answer = web.request("POST", "/v1/t", body, {"Content-Type": "text/plain"})
    assert answer.status == 401
    assert web.events() == []


def test_browser_events_get_the_senders_ip(web: Http) -> None:
    """A message from analytics.js's routes without `context.ip` gets the peer's address; one
    that has an ip keeps it; the server libraries' routes add none."""
    post_like_analytics_js(web, "/v1/t", {**SHORT["t"], "messageId": "no-ip"}, "text/plain")
    with_ip = {**SHORT["t"], "messageId": "own-ip", "context": {"ip": "203.0.113.9"}}
    post_like_analytics_js(web, "/v1/t", with_ip, "text/plain")
    body = {"writeKey": KEY, "batch": [{**SHORT["t"], "messageId": "in-batch"}]}
    web.request("POST", "/v1/b", json.dumps(body).encode(), {"Content-Type": "text/plain"})
    web.post("/v1/track", {**SHORT["t"], "messageId": "server"}, key=KEY)
    ips = {e["messageId"]: e.get("context", {}).get("ip") for e in web.events()}
    assert ips == {
        "no-ip": "127.0.0.1",
        "own-ip": "203.0.113.9",
        "in-batch": "127.0.0.1",
        "server": None,
    }


def test_settings_point_back_at_this_collector(
    web: Http, browser_collector: RunningCollector
) -> None:
    """The settings' `Segment.io` integration sends to this collector, scheme included, and
    analytics.js's own metrics are off."""
    answer = web.get(f"/v1/projects/{KEY}/settings")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    settings = answer.json
    host = browser_collector.url.removeprefix("http://")
    assert settings["integrations"]["Segment.io"] == {
        "apiKey": KEY,
        "apiHost": f"{host}/v1",
        "protocol": "http",
    }
    assert settings["metrics"]["sampleRate"] == 0


def test_settings_of_an_unknown_key_are_404(web: Http) -> None:
    """With keys configured, a key that is not one of them has no settings."""
    assert web.get("/v1/projects/other-key/settings").status == 404


def test_open_collector_has_settings_for_any_key(tmp_path: Path) -> None:
    """Without configured keys every key is accepted, so every key has settings."""
    with serve(tmp_path / "events.sqlite3") as running:
        answer = Http(running.url).get("/v1/projects/any-key/settings")
    assert answer.status == 200
    assert answer.json["integrations"]["Segment.io"]["apiKey"] == "any-key"


def test_library_file_and_its_chunks_are_served(web: Http) -> None:
    """`--analytics-js` serves the file at the snippet's path and the lazy chunks beside it,
    as JavaScript; nothing else from that folder, and not for an unknown key."""
    answer = web.get(f"/analytics.js/v1/{KEY}/analytics.min.js")
    assert answer.status == 200
    assert answer.body == b"window.loaded = true;"
    assert answer.headers["Content-Type"] == "text/javascript; charset=utf-8"
    chunk = web.get(f"/analytics-next/bundles/{CHUNK}")
    assert (chunk.status, chunk.body) == (200, b"window.chunk = true;")
    assert web.get("/analytics-next/bundles/secret.txt").status == 404
    assert web.get("/analytics.js/v1/other-key/analytics.min.js").status == 404


def test_without_a_library_file_nothing_is_served_there(web: Http, tmp_path: Path) -> None:
    """A collector started without `--analytics-js` has no such route."""
    with serve(tmp_path / "events.sqlite3") as running:
        assert Http(running.url).get("/analytics.js/v1/k/analytics.min.js").status == 404


def test_a_missing_library_file_stops_startup(tmp_path: Path) -> None:
    """A file that cannot be read fails at start, naming it."""
    missing = tmp_path / "nope.js"
    with (
        pytest.raises(OSError, match=r"nope\.js"),
        serve(tmp_path / "e.sqlite3", analytics_js=missing),
    ):
        pass


# -- CORS ------------------------------------------------------------------------------------


def preflight(web: Http, path: str, origin: str, method: str = "POST", **more: str) -> Any:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
        **more,
    }
    return web.request("OPTIONS", path, headers=headers)


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b", "/v1/batch", "/v1/track", "/v1/import"])
def test_preflight_of_an_allowed_origin_is_answered(web: Http, path: str) -> None:
    """An allowed origin's preflight gets its origin back, POST, the headers analytics.js
    sends, a max age, and no credentials."""
    answer = preflight(web, path, SHOP)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == ALLOWED_HEADERS
    assert {"Authorization", "Content-Type"} <= set(ALLOWED_HEADERS.split(", "))
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert answer.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_preflight_of_the_settings_route_allows_get(web: Http) -> None:
    answer = preflight(web, f"/v1/projects/{KEY}/settings", SHOP, method="GET")
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Methods"] == "GET"


def test_preflight_of_another_origin_is_refused(web: Http) -> None:
    """An origin not allowed gets 403 and no CORS header, so the browser sends nothing."""
    answer = preflight(web, "/v1/t", ELSEWHERE)
    assert answer.status == 403
    assert answer.json["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/events"), ("DELETE", "/api/events"), ("GET", "/api/stats"), ("GET", "/")],
)
def test_other_routes_stay_closed_to_allowed_origins(web: Http, method: str, path: str) -> None:
    """Reads, deletes and the debugger answer no preflight and carry no CORS header, even for
    an allowed origin: no page elsewhere can read the events."""
    assert preflight(web, path, SHOP, method=method).status == 405
    answer = web.request(method, path, headers={"Origin": SHOP})
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_answers_to_an_allowed_origin_are_readable(web: Http) -> None:
    """The real POST's answer names the origin and exposes Retry-After."""
    answer = post_like_analytics_js(web, "/v1/t", SHORT["t"], "text/plain", Origin=SHOP)
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert answer.headers["Access-Control-Expose-Headers"] == "Retry-After"
    settings = web.request("GET", f"/v1/projects/{KEY}/settings", headers={"Origin": SHOP})
    assert settings.headers["Access-Control-Allow-Origin"] == SHOP


def test_answers_to_another_origin_are_not_readable(web: Http) -> None:
    answer = post_like_analytics_js(web, "/v1/t", SHORT["t"], "text/plain", Origin=ELSEWHERE)
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_private_network_preflight_is_allowed_for_allowed_origins(web: Http) -> None:
    """Chromium's private network question is answered yes for an allowed origin only."""
    asked = {"Access-Control-Request-Private-Network": "true"}
    answer = preflight(web, "/v1/t", SHOP, **asked)
    assert answer.headers["Access-Control-Allow-Private-Network"] == "true"
    assert (
        "Access-Control-Allow-Private-Network"
        not in preflight(web, "/v1/t", ELSEWHERE, **asked).headers
    )


def test_any_origin_answers_star_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`*` allows every origin with `Access-Control-Allow-Origin: *` and logs a warning."""
    with caplog.at_level("WARNING", "trackline.collector"):
        running = serve(tmp_path / "events.sqlite3", allow_origins=["*"])
        with running as collector:
            answer = preflight(Http(collector.url), "/v1/t", ELSEWHERE)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert any("every origin" in record.getMessage() for record in caplog.records)


def test_no_allowed_origin_means_no_cors(http: Http) -> None:
    """The default collector answers no preflight at all."""
    assert preflight(http, "/v1/t", SHOP).status == 405


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("http://Shop.Test:3000", "http://shop.test:3000"),
        ("https://shop.test:443/", "https://shop.test"),
        ("http://shop.test:80", "http://shop.test"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_origins_are_compared_as_browsers_send_them(given: str, origin: str) -> None:
    assert normalise_origin(given) == origin
    assert Origins([given]).allows(origin, None)


@pytest.mark.parametrize(
    "given", ["shop.test", "ftp://shop.test", "http://shop.test/app", "http://shop.test?x=1", ""]
)
def test_what_is_not_an_origin_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Origins([given])


def test_an_origin_not_listed_is_not_allowed() -> None:
    origins = Origins([SHOP])
    assert not origins.allows("http://shop.test:3001", None)
    assert not origins.allows("null", None)
