"""The collector's answers: JSON documents, and errors as `{"code": ..., "message": ...}`
with the headers that go with them (`Retry-After` on a 503, the challenge on a 401).

A message is always the collector's own words, never an exception's text: an answer must not
tell a client about the collector's insides (paths, SQL, library versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson
from starlette.responses import Response

from trackline.collector.ingest import RequestRejected

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS: Final = 2
JSON: Final = "application/json"


def json_answer(
    document: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`document` as JSON."""
    return Response(orjson.dumps(document), status, headers, JSON)


def error(
    status: int,
    code: str,
    message: str,
    *,
    close: bool = False,
    retry_after: bool = False,
    challenge: str = "Basic",
) -> Response:
    """An error answer; `close` ends the connection after it, `retry_after` asks the client
    to wait, and a 401 names the `challenge` (Basic for write keys, Bearer for reads)."""
    headers = {}
    if close:
        headers["Connection"] = "close"
    if retry_after:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status == 401:
        headers["WWW-Authenticate"] = f'{challenge} realm="trackline"'
    return json_answer({"code": code, "message": message}, status, headers)


def rejected(exc: RequestRejected, challenge: str = "Basic") -> Response:
    """The answer to a refused request; a slow client (408) is let go."""
    return error(exc.status, exc.code, exc.message, close=exc.status == 408, challenge=challenge)


def overloaded(what: str) -> Response:
    """503: too many `what` at once (see `limits`)."""
    return error(503, "overloaded", f"too many {what} in progress", retry_after=True)


def unavailable() -> Response:
    """503: the store cannot write now (locked by another process, full, failing)."""
    message = "the store cannot take writes right now; try again shortly"
    return error(503, "storage_unavailable", message, retry_after=True)


def forbidden_origin() -> Response:
    """403: a web page on another origin may not change data (see `access.origins`)."""
    message = "requests from this web origin may not change data here (see --allow-origin)"
    return error(403, "forbidden_origin", message)


def flag(value: str | None) -> bool:
    """A yes/no query parameter: absent, empty, `0` or `false` is no; `1` or `true` is yes;
    raises ValueError for anything else."""
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise ValueError("must be 1 or 0 (true or false)")
