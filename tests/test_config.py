"""Option validation: every bad option is refused at construction, naming the option."""

from __future__ import annotations

from typing import Any

import pytest

import trackline
from trackline.config import Config


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"host": "api.segment.io"}, "host"),
        ({"host": "ftp://x"}, "host"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": 1.5}, "max_queue_size"),
        ({"flush_at": 0}, "flush_at"),
        ({"flush_at": 2501}, "flush_at"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"gzip": "yes"}, "gzip"),
        ({"sync": 1}, "sync"),
        ({"workers": 0}, "workers"),
        ({"max_retries": -1}, "max_retries"),
        ({"delivery_timeout": float("inf")}, "delivery_timeout"),
        ({"queue_full": "raise"}, "queue_full"),
        ({"on_error": "print"}, "on_error"),
        ({"proxy": "not a url"}, "proxy"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ],
)
def test_bad_option_names_itself(options: dict[str, Any], option: str) -> None:
    """Each invalid option raises ConfigError (a ValueError) whose `option` is its name."""
    with pytest.raises(trackline.ConfigError) as info:
        trackline.Client("k", **options)
    assert info.value.option == option
    assert str(info.value).startswith(option)
    assert isinstance(info.value, ValueError)


def test_empty_write_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or empty write key is refused."""
    monkeypatch.delenv("TRACKLINE_WRITE_KEY", raising=False)
    for key in ("", None):
        with pytest.raises(trackline.ConfigError, match="write_key"):
            trackline.Client(key)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.segment.io", "https://api.segment.io"),
        ("https://api.segment.io/", "https://api.segment.io"),
        ("https://api.segment.io/v1", "https://api.segment.io"),
        ("https://events.eu1.segmentapis.com/v1/", "https://events.eu1.segmentapis.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("https://proxy.example.com/segment", "https://proxy.example.com/segment"),
    ],
)
def test_host_is_an_origin_and_a_trailing_v1_is_forgiven(given: str, expected: str) -> None:
    """The host is kept as an origin (plus path prefix); a trailing /v1 is removed."""
    assert Config(write_key="k", host=given).host == expected


def test_defaults_match_the_documented_ones() -> None:
    """The defaults are the documented contract."""
    config = trackline.Client("k", send=False).config
    assert (config.host, config.timeout, config.max_queue_size, config.flush_at) == (
        "https://api.segment.io",
        10.0,
        10_000,
        100,
    )
    assert (config.flush_interval, config.gzip, config.sync, config.workers) == (
        0.5,
        True,
        False,
        4,
    )
    assert (config.max_retries, config.delivery_timeout, config.queue_full) == (10, 600.0, "drop")
    assert (config.shutdown_timeout, config.proxy, config.on_error) == (5.0, None, None)
