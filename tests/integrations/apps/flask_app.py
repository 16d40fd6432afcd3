"""A small Flask app using the trackline extension, for the tests and the gunicorn run.

`create_app()` reads extra config from `TEST_APP_*` environment variables (JSON values decoded,
as Flask's `from_prefixed_env` does), so gunicorn can serve `flask_app:create_app()` pointed at
a test's collector. Creating the app tracks an "App Loaded" event: under `gunicorn --preload`
that happens in the master before it forks the workers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, request

import trackline
from trackline.integrations.flask import Trackline


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env("TEST_APP")
    app.config.update(config or {})

    @app.get("/hit/<name>")
    def hit(name: str) -> tuple[str, dict[str, str]]:
        time.sleep(float(request.args.get("wait", "0")))
        trackline.track("visitor", "Flask Hit", {"name": name, "pid": os.getpid()})
        return str(os.getpid()), {"Content-Type": "text/plain"}

    @app.get("/page")
    def page() -> str:
        return "<h1>Flask page</h1>"

    @app.teardown_request
    def after(exc: BaseException | None) -> None:
        if request.path == "/teardown":
            trackline.track("visitor", "Teardown")

    Trackline(app)
    trackline.track("server", "App Loaded", {"pid": os.getpid()})
    return app
