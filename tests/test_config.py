"""Option validation: every bad option is refused at construction, naming the option."""

from __future__ import annotations

import ast
import inspect
import pathlib
from typing import Any

import pytest

import trackline
from trackline.config import FROM_ENVIRONMENT, OPTION_NAMES, Config, default
from trackline.retry import RetryPolicy

OPTIONS_PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs/reference/client-options.md"


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


def test_every_option_has_one_default_that_client_retry_and_the_docs_agree_on() -> None:
    """`Config` declares each option's default once: `Client` takes every option with that
    default (or None for those read from the environment), the retry policy starts from the
    same values, and the docs' options tables document each option with its default."""
    parameters = inspect.signature(trackline.Client).parameters
    assert set(OPTION_NAMES) == set(parameters) - {"transport"}
    for name in OPTION_NAMES:
        if name in FROM_ENVIRONMENT:
            assert parameters[name].default is None, name
        elif name != "write_key":
            assert parameters[name].default == default(name), name
    policy = RetryPolicy()
    assert (policy.max_retries, policy.backoff_base, policy.backoff_cap) == (
        default("max_retries"),
        default("backoff_base"),
        default("backoff_cap"),
    )
    documented = documented_defaults()
    assert set(documented) == set(OPTION_NAMES)
    for name, cell in documented.items():
        if name in FROM_ENVIRONMENT:
            assert cell.startswith(f"`TRACKLINE_{name.upper()}`"), name
            if name != "write_key":
                assert cell.endswith(f"`{default(name)}`"), name
        else:
            assert documented_value(cell) == default(name), name


def documented_defaults() -> dict[str, str]:
    """Option name -> the default column of the options page's tables (the options, and the
    durable mode ones); `transport`, an object rather than a setting, is not a `Config` field."""
    text = OPTIONS_PAGE.read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for table in text.split("| option | default | meaning |")[1:]:
        for line in table.split("\n\n", 1)[0].splitlines()[2:]:
            cells = line.split(" | ")
            rows[cells[0].strip("| `")] = cells[1]
    rows.pop("transport")
    return rows


def documented_value(cell: str) -> object:
    """A default as the docs write it: a Python literal, or a size or duration in words."""
    text = cell.strip("`")
    units = {"MiB": 2**20, "GiB": 2**30, "days": 24 * 3600.0}
    number, _, unit = text.partition(" ")
    if unit in units:
        return int(number) * units[unit]
    return ast.literal_eval(text)
