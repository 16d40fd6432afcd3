"""The module-level default client: `trackline.init(...)` or module attributes, then calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import trackline
from tests.support.capture import CaptureServer


@pytest.fixture(autouse=True)
def clean_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without a default client and with the module settings unset."""
    trackline.shutdown(1)
    for name in ("write_key", "host", "on_error", "on_success", "sync", "send"):
        monkeypatch.setattr(trackline, name, None)
    monkeypatch.delenv("TRACKLINE_WRITE_KEY", raising=False)
    monkeypatch.delenv("TRACKLINE_HOST", raising=False)
    yield
    trackline.shutdown(1)


def test_module_attributes_configure_the_default_client(capture: CaptureServer) -> None:
    """`trackline.write_key`/`host` then `trackline.track()` and `flush()` deliver."""
    trackline.write_key = "module-key"
    trackline.host = capture.url
    mid = trackline.track("u", "E", {"a": 1})
    trackline.identify("u", {"name": "Tom"})
    trackline.page("u", "Home")
    trackline.screen("u", "Main")
    trackline.group("u", "g1")
    trackline.alias("old", "u")
    assert trackline.flush(5)
    assert capture.delivered_ids()[0] == mid
    assert len(capture.delivered()) == 6
    assert {request.write_key for request in capture.requests} == {"module-key"}


def test_init_replaces_the_default_client(capture: CaptureServer) -> None:
    """init() builds the default client with options and returns it."""
    client = trackline.init("init-key", host=capture.url, sync=True)
    assert trackline.get_client() is client
    trackline.track("u", "E")
    assert len(capture.delivered()) == 1  # sync: delivered before the call returned
    assert capture.requests[0].write_key == "init-key"


def test_environment_supplies_key_and_host(
    capture: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKLINE_WRITE_KEY and TRACKLINE_HOST are used when nothing else is set."""
    monkeypatch.setenv("TRACKLINE_WRITE_KEY", "env-key")
    monkeypatch.setenv("TRACKLINE_HOST", capture.url)
    trackline.track("u", "E")
    assert trackline.flush(5)
    assert capture.requests[0].write_key == "env-key"


def test_missing_write_key_is_a_clear_error() -> None:
    """A module-level call with no write key anywhere names the missing option."""
    with pytest.raises(trackline.ConfigError, match="write_key"):
        trackline.track("u", "E")


def test_shutdown_then_a_new_call_starts_a_new_client(capture: CaptureServer) -> None:
    """After trackline.shutdown() the next call creates a fresh default client."""
    first = trackline.init("k", host=capture.url)
    trackline.shutdown()
    trackline.write_key = "k2"
    trackline.host = capture.url
    assert trackline.get_client() is not first
