"""Who may read what the collector stored (`/api/*`, the live stream, the debugger page).

With a read token, every reader shows it: programs in an `Authorization: Bearer` header, the
debugger page through a login that sets a cookie (HttpOnly, so no script reads it; SameSite=
Strict, so no other site's request carries it). The cookie holds an expiry and an HMAC of it
keyed with the token, never the token: it works in every collector process given the same
token, stops working when the token changes, and needs no session store.

Without a token, reads are for this machine only: a client whose address is loopback. A
collector on 127.0.0.1 thus needs no setup, and one on a network address answers no one else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Final

from trackline.collector.access.network import is_loopback
from trackline.collector.ingest import RequestRejected
from trackline.errors import ConfigError

COOKIE_NAME: Final = "trackline_read"
#: How long a debugger login lasts.
COOKIE_SECONDS: Final = 7 * 24 * 3600
#: A token shorter than this is refused at start: nothing slows down guessing over the network.
MIN_TOKEN_CHARS: Final = 16
MAX_TOKEN_CHARS: Final = 256
_COOKIE_CONTEXT: Final = b"trackline read cookie v1\0"


def token_problem(token: str) -> str | None:
    """What is wrong with `token` as a read token, or None: 16 to 256 printable ASCII
    characters without spaces (it travels in a header)."""
    if len(token) < MIN_TOKEN_CHARS:
        return (
            f"must be at least {MIN_TOKEN_CHARS} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if len(token) > MAX_TOKEN_CHARS:
        return f"must be at most {MAX_TOKEN_CHARS} characters"
    if not (token.isascii() and token.isprintable()) or " " in token:
        return "must be printable ASCII without spaces"
    return None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class ReadAccess:
    """The read rule of one collector: a token (None: loopback clients only)."""

    def __init__(self, token: str | None = None) -> None:
        if token is not None:
            problem = token_problem(token)
            if problem is not None:
                raise ConfigError("read_token", problem)
        self._token = None if token is None else token.encode()

    @property
    def token_required(self) -> bool:
        """Whether readers must show the token (else: loopback only)."""
        return self._token is not None

    def matches(self, submitted: str) -> bool:
        """Whether `submitted` is the token; in constant time."""
        if self._token is None:
            return False
        try:
            candidate = submitted.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(candidate, self._token)

    def refusal(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None
    ) -> RequestRejected | None:
        """Why this reader is turned away (401: show the token; 403: not from this machine),
        or None when it may read."""
        if self._token is None:
            if is_loopback(client):
                return None
            return RequestRejected(
                403,
                "forbidden",
                "reads from other machines need a read token: start the collector with "
                "--read-token (or TRACKLINE_READ_TOKEN) and send it as Authorization: Bearer",
            )
        bearer = _bearer(headers.get("authorization"))
        if bearer is not None and self.matches(bearer):
            return None
        if self._cookie_valid(cookies.get(COOKIE_NAME, "")):
            return None
        return RequestRejected(
            401,
            "unauthorized",
            "reading needs the read token: send Authorization: Bearer TOKEN, or log in on "
            "the debugger page",
        )

    def _mac(self, expires: int) -> str:
        assert self._token is not None
        message = _COOKIE_CONTEXT + str(expires).encode()
        return hmac.new(self._token, message, hashlib.sha256).hexdigest()

    def cookie(self, *, secure: bool, now: float | None = None) -> str:
        """A `Set-Cookie` value that lets the browser read for `COOKIE_SECONDS`; `secure`
        when the page was served over https (then the cookie never travels over http)."""
        expires = int(now if now is not None else time.time()) + COOKIE_SECONDS
        attributes = f"; Max-Age={COOKIE_SECONDS}; Path=/; HttpOnly; SameSite=Strict"
        if secure:
            attributes += "; Secure"
        return f"{COOKIE_NAME}={expires}.{self._mac(expires)}{attributes}"

    def _cookie_valid(self, value: str, now: float | None = None) -> bool:
        if self._token is None or not value:
            return False
        stamp, _, mac = value.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            return False
        expires = int(stamp)
        moment = now if now is not None else time.time()
        if not moment < expires <= moment + COOKIE_SECONDS + 60:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(expires).encode())
