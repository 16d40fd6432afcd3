"""Framework settings are read in one step and applied in another: reading changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import trackline
from trackline import _default
from trackline.errors import ConfigError
from trackline.integrations import ClientSettings, configure_default_client, read_settings


@pytest.fixture
def no_default_client() -> Iterator[None]:
    saved = _default.swap(None)
    yield
    trackline.shutdown(timeout=1.0)
    _default.swap(saved)


def reader(values: dict[str, Any]) -> Any:
    return lambda name, default: values.get(name, default)


def test_reading_settings_changes_nothing(no_default_client: None) -> None:
    """`read_settings` returns what the settings say and leaves the default client alone;
    `configure_default_client` is what makes it."""
    found = read_settings(
        reader(
            {
                "TRACKLINE_WRITE_KEY": "settings-key",
                "TRACKLINE_OPTIONS": {"send": False},
                "TRACKLINE_PAGE_VIEWS": True,
            }
        )
    )
    assert _default.current() is None
    assert found.client == ClientSettings("settings-key", None, {"send": False})
    assert found.request["page_views"] is True
    configure_default_client(found.client)
    client = _default.current()
    assert client is not None
    assert client.config.write_key == "settings-key"
    configure_default_client(found.client)
    assert _default.current() is client, "the same settings keep the client they made"


def test_a_wrong_client_option_names_its_setting(no_default_client: None) -> None:
    """An option `Client` refuses is reported under `TRACKLINE_OPTIONS`."""
    found = read_settings(
        reader({"TRACKLINE_WRITE_KEY": "k", "TRACKLINE_OPTIONS": {"flush_at": 0}})
    )
    with pytest.raises(ConfigError) as info:
        configure_default_client(found.client)
    assert info.value.option == "TRACKLINE_OPTIONS"
    assert "flush_at" in str(info.value)
