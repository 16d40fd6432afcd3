"""Which address a request came from, believing `X-Forwarded-For` only from trusted proxies.

Anyone can send an `X-Forwarded-For` header, so by default it is ignored and the client's
address is the peer of the TCP connection. When the app runs behind proxies the user names
(addresses or networks), the header is read from the right, where the nearest proxy appended
the address it saw, skipping trusted proxies: the first untrusted address is the client.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from trackline.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Names the connections that have no IP peer (a UNIX socket), for `trusted_proxies`.
UNIX = "unix"


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """An address from a header or a server, tolerating a port (`1.2.3.4:80`, `[::1]:80`).

    Cached: a server sees the same few peers and proxies over and over, and parsing is most of
    the middleware's cost per request.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose `X-Forwarded-*` headers are believed.

    `proxies` holds addresses (`"10.0.0.7"`), networks (`"10.0.0.0/8"`, `"fd00::/8"`) or
    `"unix"` for requests arriving on a UNIX socket (which only local processes can reach).
    Empty, the default, trusts no one.
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            raise ConfigError("trusted_proxies", "must be a list of addresses, not one string")
        networks: list[IPNetwork] = []
        self.unix = False
        for entry in proxies:
            if not isinstance(entry, str):
                raise ConfigError(
                    "trusted_proxies", f"entries must be strings, not {type(entry).__name__}"
                )
            if entry.strip().lower() == UNIX:
                self.unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    "trusted_proxies", f"{entry!r} is not an IP address or network"
                ) from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def peer_is_trusted(self, peer: str | None) -> bool:
        """Whether the connection's peer (None or empty: a UNIX socket) is a trusted proxy."""
        if not peer:
            return self.unix
        if not self.networks:
            return False
        address = parse_address(peer)
        return address is not None and self._trusts(address)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer, or the right-most untrusted `X-Forwarded-For` hop.

        When every hop is trusted the left-most one is the client. A hop that is not an IP
        address (`unknown`) reached before any untrusted one means the client is not known.
        """
        address = parse_address(peer) if peer else None
        if not forwarded_for or not self.peer_is_trusted(peer):
            return None if address is None else str(address)
        for hop in reversed(forwarded_for.split(",")):
            address = parse_address(hop)
            if address is None:
                return None
            if not self._trusts(address):
                break
        return None if address is None else str(address)

    def _trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)
