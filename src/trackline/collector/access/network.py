"""Where a request comes from: the client's address (through trusted proxies only), whether it
is on this machine, and whether an open collector may listen on an address at all.

Loopback decides a lot (reads without a token, clearing the store), so it is decided from IP
addresses only: never from a name such as `localhost`, which a header can claim, and never from
forwarding headers sent by a peer the user did not name with `--trusted-proxy`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from trackline.collector.access.keys import WriteKeys
from trackline.integrations.proxies import TrustedProxies

#: Headers only a proxy adds. From a peer that is not a trusted proxy they mean a proxy the
#: collector was not told about: that request's client is unknown, never "this machine".
FORWARDING_HEADERS: Final = ("x-forwarded-for", "x-real-ip", "forwarded")


class OpenBindError(ValueError):
    """A collector that accepts any write key was asked to listen beyond this machine."""


def is_loopback(address: str | None) -> bool:
    """Whether `address`, an IP literal (`127.0.0.1`, `::1`, `[::1]`, `::ffff:127.0.0.1`), is on
    this machine only. Names, `localhost` included, are not addresses: False."""
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback
    return parsed.is_loopback


def is_loopback_bind(host: str) -> bool:
    """Whether listening on `host` serves this machine only: a loopback address or the name
    `localhost` (resolved by this machine, not by a client)."""
    return host.lower() == "localhost" or is_loopback(host)


def check_bind(host: str, write_keys: WriteKeys) -> None:
    """Refuse to serve beyond loopback when any write key is accepted."""
    if write_keys.open and not is_loopback_bind(host):
        raise OpenBindError(
            f"refusing to listen on {host!r} without a write key: anyone who can reach it could "
            "write events. Give at least one --write-key, or listen on 127.0.0.1."
        )


class Clients:
    """Works out a request's client address from its TCP peer and, when the peer is one of
    the `trusted` proxies (addresses or networks), from the `X-Forwarded-For` it sends."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self.proxies = TrustedProxies(tuple(trusted))

    def address(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The client's address, or None when it cannot be known: a trusted proxy that did
        not say whom it forwards, or forwarding headers from a peer that is not trusted."""
        if self.proxies.peer_is_trusted(peer):
            forwarded_for = headers.get("x-forwarded-for")
            if not forwarded_for:
                return None
            return self.proxies.client_ip(peer, forwarded_for)
        if any(name in headers for name in FORWARDING_HEADERS):
            return None
        return peer
