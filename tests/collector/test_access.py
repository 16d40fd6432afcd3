"""The access policies on their own: write keys and key ids, host names, origins, the read
token and its cookie, the client's address. The same rules over real sockets are in
test_security.py."""

from __future__ import annotations

import re

import pytest

from trackline.collector.access import (
    Clients,
    Hosts,
    KeyIds,
    Origins,
    ReadAccess,
    WriteKeys,
    basic_auth_user,
    is_loopback,
    key_id,
    key_problem,
    normalise_origin,
)
from trackline.collector.access.reads import COOKIE_NAME, COOKIE_SECONDS
from trackline.errors import ConfigError

SECRET = b"s" * 32
TOKEN = "read-token-0123456789"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("k" * 257, "over 256"),
        ("tab\tkey", "control"),
        ("nul\0key", "control"),
        ("\ud800", "surrogate"),
        (42, "string"),
    ],
)
def test_malformed_keys_are_named(key: object, problem: str) -> None:
    """A write key is 1-256 printable characters; each other kind says what is wrong."""
    found = key_problem(key)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize("key", ["k", "k" * 256, "clé-ünïcode", "with space", "a:b"])
def test_well_formed_keys_pass(key: str) -> None:
    """Printable text up to 256 characters, Unicode and spaces included, is a well-formed key."""
    assert key_problem(key) is None


def test_configured_keys_are_checked_when_given() -> None:
    """A malformed configured key is a ConfigError naming write_keys, not a silent never-match."""
    with pytest.raises(ConfigError, match="write_keys"):
        WriteKeys(["good", "bad\nkey"])
    with pytest.raises(ConfigError, match="write_keys"):
        WriteKeys("one-string")  # type: ignore[arg-type]
    keys = WriteKeys(["good"])
    assert keys.accepts("good")
    assert not keys.accepts("goo")
    assert WriteKeys().accepts("anything")


def test_basic_header_must_decode_to_utf8() -> None:
    """Basic credentials that are not base64 of UTF-8 raise ValueError; other schemes give
    None (the key may be in the body)."""
    assert basic_auth_user("Basic a2V5Og==") == "key"
    assert basic_auth_user("Bearer x") is None
    for header in ("Basic %%%", "Basic /w==" + ""):  # /w== is the byte 0xff
        with pytest.raises(ValueError, match="UTF-8"):
            basic_auth_user(header)


def test_key_ids_show_a_short_prefix_and_a_keyed_hash() -> None:
    """A key id is at most 4 leading characters (at most a third of the key, only safe ones)
    and 12 hex digits of a hash keyed with the store's secret."""
    assert re.fullmatch(r"web-~[0-9a-f]{12}", key_id(SECRET, "web-frontend-2f9c71"))
    assert re.fullmatch(r"~[0-9a-f]{12}", key_id(SECRET, "k1"))  # too short to show any
    assert re.fullmatch(r"~[0-9a-f]{12}", key_id(SECRET, "<img src=x onerror=alert(1)>"))
    assert re.fullmatch(r"ab~[0-9a-f]{12}", key_id(SECRET, "ab<cdefgh"))


def test_key_ids_depend_on_the_secret_and_the_whole_key() -> None:
    """The same key gets the same id under one secret, another under another secret; keys
    sharing a prefix get different ids."""
    assert key_id(SECRET, "key-one-aaaa") == key_id(SECRET, "key-one-aaaa")
    assert key_id(SECRET, "key-one-aaaa") != key_id(b"t" * 32, "key-one-aaaa")
    assert key_id(SECRET, "key-one-aaaa") != key_id(SECRET, "key-one-aaab")
    ids = KeyIds(SECRET)
    assert ids("key-one-aaaa") == key_id(SECRET, "key-one-aaaa")
    with pytest.raises(ValueError, match="16 bytes"):
        KeyIds(b"short")


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        (None, True),  # no Host: not a browser
        ("127.0.0.1:8765", True),
        ("localhost:8765", True),
        ("LOCALHOST.", True),
        ("[::1]:8765", True),
        ("192.168.1.20:8765", True),  # any IP literal: an address cannot be rebound
        ("collector.lan", True),  # the name it was told to listen on
        ("dev.example:8765", True),  # --allow-host
        ("evil.example:8765", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("collector.lan.evil.example", False),
    ],
)
def test_hosts(host: str | None, answered: bool) -> None:
    """The Host allow-list: no Host, IP literals, localhost, the bound name, --allow-host."""
    assert Hosts("collector.lan", ["dev.example"]).allows(host) is answered


def test_hosts_star_and_bad_entries() -> None:
    """`*` answers any name; an entry with a scheme or a path is refused, naming the field."""
    assert Hosts("127.0.0.1", ["*"]).allows("anything.example")
    with pytest.raises(ConfigError, match="allow_hosts"):
        Hosts("127.0.0.1", ["http://x.example"])
    with pytest.raises(ConfigError, match="allow_hosts"):
        Hosts("127.0.0.1", ["x.example/path"])


def test_origins_are_normalised_as_browsers_send_them() -> None:
    """Scheme and host lower-cased, the default port dropped; `null` and paths are no origin."""
    assert normalise_origin("HTTP://LocalHost:80") == "http://localhost"
    assert normalise_origin("https://app.example:8443/") == "https://app.example:8443"
    assert normalise_origin("http://[::1]:3000") == "http://[::1]:3000"
    for bad in ("null", "file://", "http://x.example/path", "ftp://x.example", "http://u@x"):
        assert normalise_origin(bad) is None


def test_origin_policy() -> None:
    """The collector's own origin and allowed ones may change data; `*` opens ingest but
    never admin actions; without Origin, only a foreign Sec-Fetch-Site is refused."""
    own = "http://127.0.0.1:8765"
    origins = Origins(["http://localhost:3000"])
    assert origins.allows(own, own)
    assert origins.allows("http://localhost:3000", own, admin=True)
    assert not origins.allows("http://evil.example", own)
    assert not origins.allows("null", own)
    star = Origins(["*"])
    assert star.allows("http://evil.example", own)
    assert not star.allows("http://evil.example", own, admin=True)
    assert origins.permits({}, lambda: own)
    assert origins.permits({"sec-fetch-site": "same-origin"}, lambda: own)
    assert not origins.permits({"sec-fetch-site": "cross-site"}, lambda: own)
    assert origins.permits({"origin": own}, lambda: own)
    assert list(Origins(["HTTP://LOCALHOST:3000", "https://a.example"])) == [
        "http://localhost:3000",
        "https://a.example",
    ]
    with pytest.raises(ConfigError, match="allow_origins"):
        Origins(["localhost:3000"])


def test_read_token_rules() -> None:
    """Without a token, loopback clients read and others get 403; with one, the bearer
    header or the login cookie is needed from everyone (401 otherwise)."""
    open_reads = ReadAccess()
    assert open_reads.refusal({}, {}, "127.0.0.1") is None
    refused = open_reads.refusal({}, {}, "10.0.0.2")
    assert refused is not None
    assert refused.status == 403
    assert open_reads.refusal({}, {}, None) is not None  # unknown client: not this machine
    guarded = ReadAccess(TOKEN)
    assert guarded.refusal({"authorization": f"Bearer {TOKEN}"}, {}, "10.0.0.2") is None
    refused = guarded.refusal({"authorization": "Bearer wrong"}, {}, "127.0.0.1")
    assert refused is not None
    assert refused.status == 401


def test_read_cookie_is_an_expiring_mac_never_the_token() -> None:
    """The cookie value holds an expiry and an HMAC keyed with the token: valid until it
    expires, worthless under another token, HttpOnly and SameSite=Strict."""
    access = ReadAccess(TOKEN)
    header = access.cookie(secure=False, now=1_000_000)
    assert TOKEN not in header
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Secure" not in header
    assert "; Secure" in access.cookie(secure=True, now=1_000_000)
    value = header.split(";")[0].split("=", 1)[1]
    assert access._cookie_valid(value, now=1_000_000 + COOKIE_SECONDS - 1)
    assert not access._cookie_valid(value, now=1_000_000 + COOKIE_SECONDS + 1)
    assert not ReadAccess(TOKEN + "x")._cookie_valid(value, now=1_000_001)
    assert not access._cookie_valid(value.replace(".", ".0"), now=1_000_001)
    assert header.startswith(f"{COOKIE_NAME}=")


def test_weak_read_tokens_are_refused() -> None:
    """A read token under 16 characters, or with spaces, is a ConfigError naming read_token."""
    for token in ("short", "has a space in the middle", "tab\there-0123456789"):
        with pytest.raises(ConfigError, match="read_token"):
            ReadAccess(token)


def test_client_address_through_trusted_proxies_only() -> None:
    """Forwarding headers count only from a trusted proxy; from anyone else they make the
    client unknown (never loopback); a trusted proxy that names no one leaves it unknown."""
    direct = Clients()
    assert direct.address("127.0.0.1", {}) == "127.0.0.1"
    assert direct.address("127.0.0.1", {"x-forwarded-for": "127.0.0.1"}) is None
    assert direct.address("127.0.0.1", {"forwarded": "for=127.0.0.1"}) is None
    proxied = Clients(["127.0.0.1"])
    assert proxied.address("127.0.0.1", {"x-forwarded-for": "10.1.2.3"}) == "10.1.2.3"
    assert proxied.address("127.0.0.1", {"x-forwarded-for": "127.0.0.1, 10.1.2.3"}) == "10.1.2.3"
    assert proxied.address("127.0.0.1", {}) is None
    assert proxied.address("10.9.9.9", {"x-forwarded-for": "127.0.0.1"}) is None
    assert not is_loopback("localhost")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Clients(["not-an-address"])
