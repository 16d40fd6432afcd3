"""Who may do what: write keys for ingest; loopback only for an open bind and for clearing."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable


class OpenBindError(ValueError):
    """A collector that accepts any write key was asked to listen beyond this machine."""


def basic_auth_user(header: str) -> str | None:
    """The user name of an HTTP Basic `Authorization` header, the colon optional; None when
    the header uses another scheme. Raises ValueError for a Basic header that does not decode."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("the Basic credentials are not base64 of 'key:'") from exc
    return decoded.partition(":")[0]


class WriteKeys:
    """The keys a collector accepts. With none configured every non-empty key is accepted
    (it still names the source of the events): the open mode for a collector on one machine."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(key.encode() for key in keys if key)

    @property
    def open(self) -> bool:
        """Whether any key is accepted."""
        return not self._keys

    def accepts(self, key: str | None) -> bool:
        """Whether `key` may write; compared in constant time, against every key."""
        if not key:
            return False
        if not self._keys:
            return True
        candidate = key.encode()
        matched = False
        for known in self._keys:
            matched |= hmac.compare_digest(candidate, known)
        return matched


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an address, or the name `localhost`) is on this machine only."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_bind(host: str, write_keys: WriteKeys) -> None:
    """Refuse to serve beyond loopback when any write key is accepted."""
    if write_keys.open and not is_loopback(host):
        raise OpenBindError(
            f"refusing to listen on {host!r} without a write key: anyone who can reach it could "
            "write events. Give at least one --write-key, or listen on 127.0.0.1."
        )
