"""The client's address: the connection's peer unless a trusted proxy forwarded the request."""

from __future__ import annotations

import pytest

from trackline import ConfigError
from trackline.integrations.proxies import TrustedProxies, parse_address

BEHIND_LB = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted() -> None:
    """By default a client cannot choose its address by sending X-Forwarded-For."""
    assert TrustedProxies().client_ip("10.1.2.3", "203.0.113.9") == "10.1.2.3"


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    """Only a trusted peer's header counts, even when some proxies are trusted."""
    assert BEHIND_LB.client_ip("198.51.100.4", "203.0.113.9") == "198.51.100.4"


def test_right_most_untrusted_hop_is_the_client() -> None:
    """Hops the client wrote itself (left of the first untrusted one) are not believed."""
    header = "1.1.1.1, 203.0.113.9, 10.0.0.2, 10.0.0.1"
    assert BEHIND_LB.client_ip("127.0.0.1", header) == "203.0.113.9"


def test_all_hops_trusted_gives_the_left_most() -> None:
    """A request from inside the trusted network is attributed to its first hop."""
    assert BEHIND_LB.client_ip("127.0.0.1", "10.9.9.9, 10.0.0.1") == "10.9.9.9"


def test_a_malformed_hop_before_any_untrusted_one_means_unknown() -> None:
    """`unknown` (or garbage) inside the trusted chain gives no address rather than a proxy's."""
    assert BEHIND_LB.client_ip("127.0.0.1", "203.0.113.9, unknown, 10.0.0.1") is None


def test_a_malformed_hop_left_of_the_client_does_not_matter() -> None:
    """The walk stops at the first untrusted hop; what the client wrote left of it is ignored."""
    assert BEHIND_LB.client_ip("127.0.0.1", "garbage, 203.0.113.9") == "203.0.113.9"


def test_ipv6_and_ports_in_hops() -> None:
    """Hops may be IPv6, bracketed with a port, or IPv4 with a port; IPv4-mapped IPv6 is IPv4."""
    assert BEHIND_LB.client_ip("::ffff:127.0.0.1", "[2001:db8::1]:4711, fd00::5") == "2001:db8::1"
    assert BEHIND_LB.client_ip("127.0.0.1", "203.0.113.9:5000") == "203.0.113.9"


def test_unix_socket_peer_is_trusted_only_when_named() -> None:
    """A request on a UNIX socket has no peer address; `"unix"` trusts such connections."""
    assert TrustedProxies(["127.0.0.1"]).client_ip(None, "203.0.113.9") is None
    assert TrustedProxies(["unix"]).client_ip("", "203.0.113.9") == "203.0.113.9"


def test_peer_without_forwarding_is_the_client() -> None:
    """A trusted peer that forwards no header is itself the client (a health check, say)."""
    assert BEHIND_LB.client_ip("10.0.0.1", None) == "10.0.0.1"


@pytest.mark.parametrize(
    ("proxies", "problem"),
    [
        ("10.0.0.1", "not one string"),
        (["10.0.0.300"], "'10.0.0.300' is not an IP address or network"),
        ([10], "entries must be strings"),
    ],
)
def test_bad_trusted_proxies_name_the_option(proxies: object, problem: str) -> None:
    """A wrong `trusted_proxies` raises ConfigError naming it and what is wrong."""
    with pytest.raises(ConfigError, match=problem) as caught:
        TrustedProxies(proxies)  # type: ignore[arg-type]
    assert caught.value.option == "trusted_proxies"


def test_parse_address_rejects_names() -> None:
    """Host names are not addresses: they are never believed as a client's IP."""
    assert parse_address("proxy.internal") is None
