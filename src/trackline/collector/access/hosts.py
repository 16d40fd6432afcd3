"""Which `Host` a request may name: the defence against DNS rebinding.

A web page on `evil.example` can make its own name resolve to 127.0.0.1 and then talk to a
collector on this machine as if it were its own site. The browser still sends
`Host: evil.example`, so a collector that answers only to its own names is out of reach.

Answered: no `Host` at all (a browser always sends one), any IP literal (a rebinding attack
needs a name it controls, and an address cannot be rebound: this is what lets a collector
bound to 0.0.0.0 or a LAN address answer `http://192.168.1.20:8765`), `localhost`, the name
the collector was told to listen on, and the names given with `--allow-host`. `*` answers to
every name, for a collector behind a proxy that checks names itself.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from trackline.errors import ConfigError

_LABEL: Final = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_NAME: Final = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def host_name(host: str) -> str:
    """The name part of a `Host` value: without the port, lower case, without a final dot,
    an IPv6 literal without its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.removesuffix(".")


@functools.lru_cache(maxsize=1024)
def is_ip_literal(name: str) -> bool:
    """Whether `name` (as `host_name` returns it) is an IP address rather than a DNS name.
    Cached: a collector sees the same few names over and over."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Hosts:
    """The names a collector answers to; see the module docstring for the defaults."""

    def __init__(self, bound: str, allowed: Iterable[str] = ()) -> None:
        if isinstance(allowed, str):
            raise ConfigError("allow_hosts", "must be a list of host names, not one string")
        names = {"localhost"}
        self.any = False
        for entry in allowed:
            if entry.strip() == "*":
                self.any = True
                continue
            name = host_name(entry)
            if is_ip_literal(name):
                continue  # always answered
            if "/" in entry or not _NAME.match(name) or len(name) > 253:
                raise ConfigError(
                    "allow_hosts",
                    f"{entry!r} is not a host name (give the name alone: no scheme, port or path)",
                )
            names.add(name)
        bound_name = host_name(bound)
        if bound_name and not is_ip_literal(bound_name):
            names.add(bound_name)
        self.names = frozenset(names)

    def allows(self, host: str | None) -> bool:
        """Whether a request naming `host` (its `Host` header, None when absent) is answered."""
        if not host or self.any:
            return True
        name = host_name(host)
        return name in self.names or is_ip_literal(name)
