"""The analytics.js loader (`trackline.browser.snippet`) configured from framework settings,
for the Django template tag and the Flask template global.

The browser sends to the same place as the server's default client: `TRACKLINE_HOST` (the
setting, else the environment variable), with `TRACKLINE_BROWSER_WRITE_KEY` when the browser
has a write key of its own (Segment gives each source one), else `TRACKLINE_WRITE_KEY`.
`TRACKLINE_BROWSER_CDN` loads analytics.js from elsewhere than the host. Arguments given in
the template win over settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from trackline.browser import Snippet, snippet
from trackline.errors import ConfigError

#: Reads one setting: `(name, default) -> value`, as `getattr(settings, ...)` or `config.get`.
SettingReader = Callable[[str, Any], Any]


def _setting(setting: SettingReader, name: str) -> Any:
    """The setting, else the environment variable of the same name, else None."""
    value = setting(name, None)
    if value is None:
        value = os.environ.get(name) or None
    return value


def settings_snippet(setting: SettingReader, **arguments: Any) -> Snippet:
    """`snippet(...)` with `arguments` (its own: `write_key`, `host`, `cdn`, `page`, `nonce`,
    `options`) and what they leave out taken from the settings; raises `ConfigError` naming
    the setting or argument that is missing or wrong."""
    write_key = arguments.pop("write_key", None)
    host = arguments.pop("host", None)
    cdn = arguments.pop("cdn", None)
    names = {"write_key": "write_key", "host": "host", "cdn": "cdn"}
    if write_key is None:
        names["write_key"] = "TRACKLINE_BROWSER_WRITE_KEY"
        write_key = setting("TRACKLINE_BROWSER_WRITE_KEY", None)
    if write_key is None:
        names["write_key"] = "TRACKLINE_WRITE_KEY"
        write_key = _setting(setting, "TRACKLINE_WRITE_KEY")
    if write_key is None:
        raise ConfigError(
            "TRACKLINE_WRITE_KEY",
            "the analytics.js loader needs a write key: set TRACKLINE_BROWSER_WRITE_KEY or "
            "TRACKLINE_WRITE_KEY, or pass write_key",
        )
    if host is None:
        names["host"] = "TRACKLINE_HOST"
        host = _setting(setting, "TRACKLINE_HOST")
    if cdn is None:
        names["cdn"] = "TRACKLINE_BROWSER_CDN"
        cdn = setting("TRACKLINE_BROWSER_CDN", None)
    try:
        return snippet(write_key, host=host, cdn=cdn, **arguments)
    except ConfigError as error:
        raise ConfigError(names.get(error.option, error.option), error.problem) from None
