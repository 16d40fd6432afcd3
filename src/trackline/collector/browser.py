"""What Segment's analytics.js fetches from its CDN, served by the collector itself: the
settings object of a write key, and (optionally) the library file the user supplies.

analytics.js loads `{cdn}/v1/projects/{writeKey}/settings` before it sends anything; the
`Segment.io` integration's `apiHost` and `protocol` there say where events go. Answering it
here, pointing back at this collector, makes `AnalyticsBrowser.load({writeKey, cdnURL})` and
the standard snippet work with no other option. The settings also turn off analytics.js's
own metrics (`sampleRate: 0`), which would otherwise go to Segment's servers.

trackline never ships or downloads analytics.js: with `analytics_js` (the CLI's
`--analytics-js FILE`), the collector serves the file the user gives it, from their own
`node_modules` for example, at the path the snippet loads it from, and the chunks it loads
lazily from the same folder, so a page works with no internet at all.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trackline.collector.access import WriteKeys, caller

SETTINGS_PATH: Final = "/v1/projects/{write_key}/settings"
LIBRARY_PATH: Final = "/analytics.js/v1/{write_key}/analytics.min.js"
#: Where analytics.js (built with webpack) loads its lazy chunks from: `{cdn}` + this.
CHUNKS_PATH: Final = "/analytics-next/bundles/{name}"
#: The lazy chunks' file names, as webpack writes them (`queryString.bundle.34b1....js`).
_CHUNK_NAME: Final = re.compile(r"[A-Za-z0-9_-]+\.bundle\.[0-9a-f]+\.js")
_SETTINGS: Final = re.compile(r"/v1/projects/[^/]+/settings")
_SCRIPT: Final = "text/javascript; charset=utf-8"
_HEADERS: Final = {"Cache-Control": "no-cache"}


def _not_found(message: str) -> Response:
    document = {"code": "not_found", "message": message}
    return Response(orjson.dumps(document), 404, media_type="application/json")


def settings_document(write_key: str, base_url: str) -> dict[str, object]:
    """The settings analytics.js expects for `write_key`, sending events to the collector at
    `base_url` (`http://127.0.0.1:8765/`, or with the prefix it is mounted under)."""
    scheme, _, rest = base_url.partition("://")
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": rest.rstrip("/") + "/v1",
                "protocol": scheme,
            }
        },
        "plan": {},
        "remotePlugins": [],
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
    }


async def _settings(request: Request, *, keys: WriteKeys) -> Response:
    write_key = request.path_params["write_key"]
    if not keys.accepts(write_key):
        return _not_found("unknown write key")
    # The scheme and host the browser used: behind a trusted proxy, those it forwards.
    seen = caller(request).request
    base_url = f"{seen.scheme}://{seen.host}{request.scope.get('root_path', '')}/"
    document = settings_document(write_key, base_url)
    return Response(orjson.dumps(document), headers=_HEADERS, media_type="application/json")


async def _file(request: Request, *, body: bytes, keys: WriteKeys) -> Response:
    if not keys.accepts(request.path_params["write_key"]):
        return _not_found("unknown write key")
    return Response(body, headers=_HEADERS, media_type=_SCRIPT)


def _chunks(folder: Path) -> dict[str, bytes]:
    """The lazily loaded chunks beside the library file, by name."""
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir())
        if _CHUNK_NAME.fullmatch(entry.name) and entry.is_file()
    }


async def _chunk(request: Request, *, chunks: dict[str, bytes]) -> Response:
    body = chunks.get(request.path_params["name"])
    if body is None:
        return _not_found("no such analytics.js chunk beside the --analytics-js file")
    return Response(body, headers=_HEADERS, media_type=_SCRIPT)


def routes(keys: WriteKeys, analytics_js: str | os.PathLike[str] | None = None) -> list[Route]:
    """`GET /v1/projects/{writeKey}/settings`, and with `analytics_js` the library at
    `/analytics.js/v1/{writeKey}/analytics.min.js` and its chunks. The files are read once,
    here; a missing or unreadable file raises `OSError` naming it."""
    found = [Route(SETTINGS_PATH, functools.partial(_settings, keys=keys), methods=["GET"])]
    if analytics_js is None:
        return found
    path = Path(analytics_js)
    try:
        library = path.read_bytes()
        chunks = _chunks(path.parent)
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise OSError(f"the analytics.js file {str(path)!r} cannot be read: {problem}") from exc
    found += [
        Route(LIBRARY_PATH, functools.partial(_file, body=library, keys=keys), methods=["GET"]),
        Route(CHUNKS_PATH, functools.partial(_chunk, chunks=chunks), methods=["GET"]),
    ]
    return found


def is_settings_path(path: str) -> bool:
    """Whether `path` is the settings route's (`/v1/projects/{writeKey}/settings`)."""
    return _SETTINGS.fullmatch(path) is not None
