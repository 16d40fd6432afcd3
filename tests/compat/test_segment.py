"""`trackline.compat.segment`: code written for segment-analytics-python 2.x, over real HTTP."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import trackline.compat.segment as segment
from tests.support import docs_examples
from tests.support.capture import CaptureServer, Reply

SETTINGS = (
    "write_key",
    "host",
    "on_error",
    "debug",
    "send",
    "sync_mode",
    "max_queue_size",
    "gzip",
    "timeout",
    "max_retries",
    "proxies",
    "upload_size",
    "upload_interval",
)


@pytest.fixture
def analytics(capture: CaptureServer) -> Iterator[ModuleType]:
    """The compat module pointed at the capture server, its settings restored afterwards."""
    saved = {name: getattr(segment, name) for name in SETTINGS}
    segment.write_key = "segment-write-key"
    segment.host = capture.url
    yield segment
    segment.shutdown()
    for name, value in saved.items():
        setattr(segment, name, value)


@pytest.fixture
def make_segment_client(capture: CaptureServer) -> Iterator[Any]:
    """Build compat clients aimed at the capture server; each is shut down after the test."""
    clients: list[segment.Client] = []

    def make(*args: Any, **kwargs: Any) -> segment.Client:
        if not args:
            kwargs.setdefault("write_key", "segment-write-key")
            kwargs.setdefault("host", capture.url)
        client = segment.Client(*args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown(timeout=1.0)


def test_code_written_for_segment_runs_unchanged(
    analytics: ModuleType, capture: CaptureServer
) -> None:
    """The module-level usage from segment's docs delivers every call, with the same fields."""
    analytics.write_key = "segment-write-key"
    analytics.identify("019mr8mf4r", {"email": "john@example.com", "name": "John Smith"})
    analytics.track("019mr8mf4r", "Signed Up", {"plan": "Enterprise"})
    analytics.page("019mr8mf4r", "Docs", "Python", {"url": "http://segment.com"})
    analytics.screen("019mr8mf4r", "Settings", "Brightness", {"from": "Home Screen"})
    analytics.group("019mr8mf4r", "0e8c78ea9d97a7b8185e8632", {"name": "Initech", "plan": "pro"})
    analytics.alias("previous_id", "019mr8mf4r")
    analytics.flush()
    sent = capture.delivered()
    assert [m["type"] for m in sent] == ["identify", "track", "page", "screen", "group", "alias"]
    assert sent[1]["event"] == "Signed Up"
    assert sent[1]["properties"] == {"plan": "Enterprise"}
    assert (sent[2]["category"], sent[2]["name"]) == ("Docs", "Python")
    assert (sent[3]["category"], sent[3]["name"]) == ("Settings", "Brightness")
    assert sent[4]["groupId"] == "0e8c78ea9d97a7b8185e8632"
    assert (sent[5]["previousId"], sent[5]["userId"]) == ("previous_id", "019mr8mf4r")
    assert {request.write_key for request in capture.requests} == {"segment-write-key"}


def test_module_functions_return_success_and_the_message(analytics: ModuleType) -> None:
    """Like segment's calls, module functions return `(success, message_dict)`."""
    success, msg = analytics.track("u1", "Clicked", {"button": "buy"})
    assert success is True
    assert msg["type"] == "track"
    assert msg["userId"] == "u1"
    assert msg["event"] == "Clicked"
    assert msg["properties"] == {"button": "buy"}
    assert msg["anonymousId"] is None
    assert msg["integrations"] == {}
    assert msg["context"]["library"]["name"] == "trackline"
    assert isinstance(msg["messageId"], str)
    assert msg["timestamp"].endswith("Z")


def test_the_returned_message_is_the_one_delivered(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """messageId, timestamp and fields of the returned dict match what reached the server."""
    client = make_segment_client(sync_mode=True)
    _, msg = client.identify("u1", {"plan": "pro"}, {"ip": "12.212.12.49"})
    sent = capture.delivered()[0]
    for key in ("messageId", "timestamp", "userId", "traits", "type"):
        assert sent[key] == msg[key]
    assert sent["context"]["ip"] == msg["context"]["ip"] == "12.212.12.49"


def test_client_takes_segment_positional_order(capture: CaptureServer) -> None:
    """write_key, host, debug, max_queue_size, send, on_error, gzip, max_retries, sync_mode,
    timeout: the positional order of segment's `Client`."""
    client = segment.Client("key", capture.url, False, 100, True, None, True, 3, True, 5)
    assert client.sync_mode is True
    assert client.gzip is True
    client.track("u", "Positional")
    request = capture.requests[0]
    assert request.headers.get("content-encoding") == "gzip"
    assert request.batch[0]["event"] == "Positional"
    client.shutdown()


def test_page_and_screen_take_category_before_name(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """`page(user_id, category, name, properties)`: the order where segment differs."""
    client = make_segment_client(sync_mode=True)
    client.page("u", "Docs", "Intro", {"path": "/docs"})
    client.screen("u", None, "Home")
    page, screen = capture.delivered()
    assert (page["category"], page["name"], page["properties"]) == (
        "Docs",
        "Intro",
        {"path": "/docs"},
    )
    assert screen["name"] == "Home"
    assert "category" not in screen


def test_segment_defaults_gzip_off_and_upload_size_triggers_a_send(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """Bodies are plain by default, and `upload_size` queued messages are sent without waiting
    for `upload_interval`."""
    client = make_segment_client(upload_size=2, upload_interval=30.0)
    client.track("u", "Tick", {"n": 0})
    client.track("u", "Tick", {"n": 1})
    delivered = capture.wait_for_messages(2, timeout=5.0)
    assert [m["properties"]["n"] for m in delivered] == [0, 1]
    assert all("content-encoding" not in r.headers for r in capture.requests)


def test_send_false_validates_and_returns_success_without_sending(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """`send=False` answers `(True, msg)` and nothing goes on the wire, as in segment."""
    client = make_segment_client(send=False)
    success, msg = client.track("u", "Dry")
    client.flush()
    assert success is True
    assert msg["event"] == "Dry"
    assert capture.requests == []


def test_a_full_queue_returns_false(make_segment_client: Any) -> None:
    """When `max_queue_size` is reached the call returns `(False, msg)` instead of blocking."""
    client = make_segment_client(max_queue_size=1, upload_interval=30.0)
    assert client.track("u", "First")[0] is True
    success, msg = client.track("u", "Second")
    assert success is False
    assert msg["event"] == "Second"
    assert client.stats.dropped == {"queue_full": 1}


def test_sync_mode_failure_returns_false_and_calls_on_error_with_an_api_error(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """A refused message is reported, not raised: `(False, msg)`, and `on_error(APIError,
    batch)` with segment's `status`, `code` and `message` attributes."""
    errors: list[tuple[Any, list[dict[str, Any]]]] = []
    capture.script(Reply(400, body=b'{"code":"invalid_request","message":"bad"}'))
    client = make_segment_client(sync_mode=True, on_error=lambda e, b: errors.append((e, b)))
    success, msg = client.track("u", "Refused")
    assert success is False
    error, batch = errors[0]
    assert isinstance(error, segment.APIError)
    assert error.status == 400
    assert error.code == "rejected"
    assert "bad" in error.message
    assert batch[0]["messageId"] == msg["messageId"]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.track(None, "Event"), "user_id"),
        (lambda c: c.track("u", None), "event"),
        (lambda c: c.track("u", "E", ["not", "a", "dict"]), "properties"),
        (lambda c: c.group("u", None), "group_id"),
        (lambda c: c.alias(None, "u"), "previous_id"),
        (lambda c: c.identify("u", context="nope"), "context"),
        (lambda c: c.track("u", "E", timestamp="not a date"), "timestamp"),
    ],
)
def test_bad_arguments_raise_assertion_error_naming_the_field(call: Any, field: str) -> None:
    """segment raises AssertionError for bad arguments; so do we, with the field's name."""
    with pytest.raises(AssertionError, match=field):
        call(segment.Client("key", send=False))


def test_a_message_over_32_kb_raises_runtime_error() -> None:
    """segment raises RuntimeError for an oversized message; so do we."""
    with pytest.raises(RuntimeError, match="32768 bytes"):
        segment.Client("key", send=False).track("u", "Big", {"blob": "x" * 40_000})


def test_a_missing_write_key_raises_assertion_error(
    analytics: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calling before setting `write_key` fails loudly, as in segment."""
    monkeypatch.delenv("TRACKLINE_WRITE_KEY", raising=False)
    analytics.write_key = None
    with pytest.raises(AssertionError, match="write_key"):
        analytics.track("u", "No Key")


def test_ids_may_be_numbers_and_message_ids_any_object(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """Numeric ids and a UUID message id are sent as strings, as segment's `stringify_id` does."""
    client = make_segment_client(sync_mode=True)
    mid = uuid.uuid4()
    client.group(42, 7, message_id=mid)
    sent = capture.delivered()[0]
    assert (sent["userId"], sent["groupId"], sent["messageId"]) == ("42", "7", str(mid))


def test_timestamps_follow_tracklines_one_rule(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """Aware datetimes are converted to UTC; a naive one is local time, as everywhere in
    trackline (segment guessed: local within 5 s of now, else UTC); a string without an
    offset is UTC, as on the wire."""
    client = make_segment_client(sync_mode=True)
    eastern = dt.timezone(dt.timedelta(hours=-5))
    client.track("u", "Aware", timestamp=dt.datetime(2010, 1, 18, 7, 30, tzinfo=eastern))
    naive = dt.datetime(2010, 1, 18, 12, 30)
    client.track("u", "Naive", timestamp=naive)
    client.track("u", "Text", timestamp="2010-01-18T12:30:00")
    aware, local, text = capture.delivered()
    assert aware["timestamp"] == text["timestamp"] == "2010-01-18T12:30:00.000Z"
    assert local["timestamp"] == naive.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_values_json_cannot_hold_are_dropped_with_a_warning(
    make_segment_client: Any, capture: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Like segment's `clean()`: bytes are decoded, an unencodable value's key is dropped and
    logged, the rest of the message is sent."""
    client = make_segment_client(sync_mode=True)
    properties = {"raw": b"bytes", "odd": object(), "price": decimal.Decimal("39.95")}
    success, msg = client.track("u", "Cleaned", properties)
    assert success is True
    sent = capture.delivered()[0]
    assert sent["properties"] == {"raw": "bytes", "price": 39.95}
    assert msg["properties"] == {"raw": "bytes", "price": decimal.Decimal("39.95")}
    assert "dropped properties.odd" in caplog.text


def test_proxies_are_used_for_the_host_scheme(
    make_segment_client: Any, capture: CaptureServer
) -> None:
    """A requests-style `proxies` mapping routes requests through the proxy for the scheme."""
    client = make_segment_client(
        host="http://api.example.invalid", proxies={"http": capture.url}, sync_mode=True
    )
    assert client.track("u", "Proxied")[0] is True
    assert capture.requests[0].path == "http://api.example.invalid/v1/batch"


def test_debug_does_not_configure_logging(make_segment_client: Any) -> None:
    """`debug=True` and `log_handler` are accepted, but no logger gets a handler or a level."""
    names = ("", "trackline", "segment", "trackline.compat.segment")
    before = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in names
    }
    make_segment_client(debug=True, log_handler=logging.StreamHandler())
    after = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
        for name in names
    }
    assert after == before


def test_module_join_and_shutdown_before_any_call_do_nothing(analytics: ModuleType) -> None:
    """With no default client yet, `join()` and `shutdown()` make none (and need no key)."""
    analytics.write_key = None
    analytics.join()
    analytics.shutdown()
    assert analytics.default_client is None


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("write_key", "test-init"),
        ("host", "http://127.0.0.1:9"),
        ("debug", True),
        ("send", False),
        ("sync_mode", True),
        ("gzip", True),
        ("timeout", 7),
        ("max_retries", 3),
        ("max_queue_size", 1234),
        ("upload_size", 50),
        ("upload_interval", 0.25),
    ],
)
def test_module_flush_makes_the_default_client_from_the_settings(
    analytics: ModuleType, setting: str, value: Any
) -> None:
    """As in segment, `flush()` before any call makes the default client from the module's
    settings, so `default_client` reads back what was set."""
    analytics.shutdown()
    setattr(analytics, setting, value)
    assert analytics.default_client is None
    analytics.flush()
    assert getattr(analytics.default_client, setting) == value


def test_module_flush_without_a_write_key_raises_like_segment(analytics: ModuleType) -> None:
    """Making the default client needs a write key, as in segment: AssertionError naming it."""
    analytics.shutdown()
    analytics.write_key = None
    with pytest.raises(AssertionError, match="write_key"):
        analytics.flush()


def test_module_calls_after_shutdown_start_a_new_client(
    analytics: ModuleType, capture: CaptureServer
) -> None:
    """After `shutdown()`, the next call works again instead of being silently lost."""
    analytics.track("u", "Before")
    analytics.shutdown()
    assert analytics.track("u", "After")[0] is True
    analytics.flush()
    assert [m["event"] for m in capture.delivered()] == ["Before", "After"]


def test_settings_are_forwarded_to_the_default_client(analytics: ModuleType) -> None:
    """Every module setting reaches the default client, including those segment forgot."""
    analytics.upload_size = 7
    analytics.upload_interval = 0.25
    analytics.max_queue_size = 123
    analytics.timeout = 3
    analytics.send = False
    analytics.track("u", "Configured")
    config = analytics.default_client._client.config
    assert (config.flush_at, config.flush_interval) == (7, 0.25)
    assert (config.max_queue_size, config.timeout, config.send) == (123, 3, False)


def test_exit_without_flush_delivers_everything(capture: CaptureServer) -> None:
    """A script that never flushes (segment loses most of its queue at exit) delivers all."""
    script = textwrap.dedent(
        f"""
        import trackline.compat.segment as analytics
        analytics.write_key = "segment-write-key"
        analytics.host = {capture.url!r}
        for n in range(500):
            analytics.track("u", "Exit", {{"n": n}})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(m["properties"]["n"] for m in capture.delivered()) == list(range(500))


def test_the_docs_migration_example_runs_as_written(capture: CaptureServer) -> None:
    """The docs' migration guide's example delivers its four messages."""
    (example,) = docs_examples.python_blocks("guides/migrating-from-segment.md")
    result = docs_examples.run_script(example, capture.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True ")
    types = [m["type"] for m in capture.delivered()]
    assert types == ["identify", "track", "page", "group"]
