"""Flask extension: request context for every trackline call, configured from `app.config`.

```python
from flask import Flask
from trackline.integrations.flask import Trackline

app = Flask(__name__)
app.config["TRACKLINE_WRITE_KEY"] = "WRITE_KEY"
Trackline(app)            # or: tracking = Trackline(); ...; tracking.init_app(app)
```

Config keys, all optional: `TRACKLINE_WRITE_KEY`, `TRACKLINE_HOST`, `TRACKLINE_OPTIONS` (a dict
of `Client` options) initialise the default client; `TRACKLINE_TRUSTED_PROXIES`,
`TRACKLINE_PAGE_VIEWS`, `TRACKLINE_PAGE_FILTER` and `TRACKLINE_BROWSER_ANONYMOUS_ID` work as in
the WSGI middleware, which the extension puts around `app.wsgi_app` so that teardown handlers
and streamed responses see the context too.

Templates get `trackline_snippet(...)`, the analytics.js loader configured from the same keys
(see `integrations/loader.py`): `{{ trackline_snippet() }}` in a page's `<head>`, with
`nonce=...` for a Content-Security-Policy nonce.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app

from trackline.browser import Snippet
from trackline.integrations import configure_default_client, read_settings
from trackline.integrations.loader import settings_snippet
from trackline.integrations.wsgi import TracklineMiddleware


def trackline_snippet(**arguments: Any) -> Snippet:
    """The Jinja global: the loader for the app rendering the template; arguments as
    `trackline.browser.snippet`'s (`write_key`, `host`, `cdn`, `page`, `nonce`, `options`)."""
    return settings_snippet(current_app.config.get, **arguments)


class Trackline:
    """The Flask extension: `Trackline(app)`, or `Trackline()` then `init_app(app)`."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's `TRACKLINE_*` config and wrap its WSGI app; once per app."""
        if "trackline" in app.extensions:
            return
        found = read_settings(app.config.get)
        configure_default_client(found.client)
        options = found.request
        app.wsgi_app = TracklineMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
        app.add_template_global(trackline_snippet)
        app.extensions["trackline"] = self
