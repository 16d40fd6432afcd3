"""Describing a request from a WSGI environ or an ASGI scope, and the context it gives."""

from __future__ import annotations

from typing import Any

import pytest

from trackline.integrations.proxies import TrustedProxies
from trackline.integrations.request import (
    from_environ,
    from_scope,
    preferred_locale,
    request_context,
)

NOBODY = TrustedProxies()


def environ(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "app.internal",
        "SERVER_PORT": "8000",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.10",
    }
    return {**base, **overrides}


def test_context_has_ip_user_agent_locale_and_page() -> None:
    """A request gives ip, userAgent, locale and page (path, url, search, referrer)."""
    request = from_environ(
        environ(
            HTTP_HOST="shop.example",
            PATH_INFO="/cart",
            QUERY_STRING="coupon=SPRING&x=1",
            HTTP_USER_AGENT="Mozilla/5.0 (X11)",
            HTTP_REFERER="https://search.example/?q=shoes",
            HTTP_ACCEPT_LANGUAGE="de-CH,de;q=0.9,en;q=0.5",
        ),
        NOBODY,
    )
    assert request_context(request) == {
        "ip": "192.0.2.10",
        "userAgent": "Mozilla/5.0 (X11)",
        "locale": "de-CH",
        "page": {
            "path": "/cart",
            "url": "http://shop.example/cart?coupon=SPRING&x=1",
            "search": "?coupon=SPRING&x=1",
            "referrer": "https://search.example/?q=shoes",
        },
    }


def test_absent_headers_leave_their_keys_out() -> None:
    """No User-Agent, Accept-Language, Referer or query: no empty values in the context."""
    assert request_context(from_environ(environ(), NOBODY)) == {
        "ip": "192.0.2.10",
        "page": {"path": "/", "url": "http://app.internal:8000/"},
    }


def test_wsgi_path_is_reencoded_from_pep3333_latin1() -> None:
    """PATH_INFO holds UTF-8 bytes as latin-1 characters; the page path is percent-encoded,
    mount prefix (SCRIPT_NAME) first."""
    raw = "/caf\u00e9 menu".encode().decode("latin-1")
    request = from_environ(environ(SCRIPT_NAME="/shop", PATH_INFO=raw), NOBODY)
    assert request.path == "/shop/caf%C3%A9%20menu"


def test_default_ports_are_left_out_of_the_url() -> None:
    """Without a Host header the URL is rebuilt from the server name, port only if unusual."""
    request = from_environ(environ(SERVER_PORT="443", **{"wsgi.url_scheme": "https"}), NOBODY)
    assert request.url == "https://app.internal/"


def test_forwarded_proto_and_host_apply_only_from_trusted_proxies() -> None:
    """Behind a TLS-terminating proxy the URL is the one the browser used; from anyone
    else the forwarded headers are ignored."""
    headers = environ(
        HTTP_HOST="app.internal:8000",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST="shop.example",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    trusted = from_environ(headers, TrustedProxies(["192.0.2.0/24"]))
    assert (trusted.url, trusted.ip) == ("https://shop.example/", "203.0.113.9")
    untrusted = from_environ(headers, NOBODY)
    assert (untrusted.url, untrusted.ip) == ("http://app.internal:8000/", "192.0.2.10")


def scope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 8000),
        "client": ("192.0.2.10", 50000),
    }
    return {**base, **overrides}


def test_asgi_scope_gives_the_same_context() -> None:
    """An ASGI request with the same headers describes itself as a WSGI one does."""
    request = from_scope(
        scope(
            path="/cart",
            raw_path=b"/cart",
            query_string=b"coupon=SPRING",
            headers=[
                (b"host", b"shop.example"),
                (b"user-agent", b"Mozilla/5.0 (X11)"),
                (b"accept-language", b"fr"),
            ],
        ),
        NOBODY,
    )
    assert request_context(request) == {
        "ip": "192.0.2.10",
        "userAgent": "Mozilla/5.0 (X11)",
        "locale": "fr",
        "page": {
            "path": "/cart",
            "url": "http://shop.example/cart?coupon=SPRING",
            "search": "?coupon=SPRING",
        },
    }


def test_asgi_path_uses_raw_path_or_root_path_and_path() -> None:
    """raw_path is the path as sent; without it, root_path is prefixed unless already there."""
    assert from_scope(scope(raw_path=b"/a%2Fb/c", path="/a/b/c"), NOBODY).path == "/a%2Fb/c"
    assert from_scope(scope(root_path="/api", path="/users"), NOBODY).path == "/api/users"
    assert from_scope(scope(root_path="/api", path="/api/users"), NOBODY).path == "/api/users"


def test_asgi_without_host_header_or_client() -> None:
    """No Host header: the server address makes the URL; no client (a UNIX socket): no ip."""
    request = from_scope(scope(client=None, server=("10.0.0.5", 443), scheme="https"), NOBODY)
    assert request.url == "https://10.0.0.5/"
    assert "ip" not in request_context(request)


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        ("en-US,en;q=0.9", "en-US"),
        ("fr;q=0.4, de;q=0.8, en;q=0.8", "de"),
        ("*, pt-BR;q=0.3", "pt-BR"),
        ("es;q=0, it;q=0.1", "it"),
        ("zh-Hant-TW", "zh-Hant-TW"),
        ("*", None),
        ("en;q=abc, ;;, <script>", None),
        ("", None),
        (None, None),
    ],
)
def test_locale_is_the_most_preferred_language(header: str | None, locale: str | None) -> None:
    """Accept-Language: highest q wins, first on a tie; wildcards and q=0 never win."""
    assert preferred_locale(header) == locale


def test_cookies_are_read_leniently() -> None:
    """Cookies are read by name with quotes removed; odd names are kept and entries without `=`
    skipped, where `http.cookies` would drop every cookie after them; the first of two with
    the same name wins, as browsers send the most specific first."""
    header = 'ajs_anonymous_id="a1"; bad cookie=1;; theme=dark; flag; theme=light'
    request = from_environ(environ(HTTP_COOKIE=header), NOBODY)
    assert request.cookies == {"ajs_anonymous_id": "a1", "bad cookie": "1", "theme": "dark"}
