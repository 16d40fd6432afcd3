"""Write keys: which are well formed, which a collector accepts, and the key ids that stand in
for them everywhere they are stored or shown.

A write key is a secret (Segment's own rule), but the collector needs to tell sources apart in
its rows, counts, filters and debugger. So it never keeps the key: it keeps a key id, a few
leading characters of the key (enough for a person to recognise it) and a keyed hash of the
whole key. The hash is keyed with a random secret the store makes once, so an id read from an
answer or a database copy cannot be tested against guessed keys without that secret, and every
collector process sharing one store computes the same id for the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from trackline.errors import ConfigError

#: The longest write key taken, in characters: real keys are 32-64 characters.
MAX_KEY_CHARS: Final = 256
#: Hex digits of the keyed hash in a key id: 48 bits, so distinct keys never share an id in
#: practice, while the id stays short enough to read.
KEY_ID_HEX_DIGITS: Final = 12
#: Characters a key id's visible prefix may show; a key starting with anything else shows none.
_PREFIX_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-_.")
#: Key ids remembered per collector; past this the memory starts afresh (open mode takes any key).
_CACHED_IDS: Final = 4096


def key_problem(key: object) -> str | None:
    """What is wrong with `key` as a write key, or None when it is well formed: a string of
    1 to 256 printable characters (no control character, no unpaired surrogate)."""
    if not isinstance(key, str):
        return "the write key must be a string"
    if not key:
        return "the write key is empty"
    if len(key) > MAX_KEY_CHARS:
        return f"the write key is over {MAX_KEY_CHARS} characters"
    if not key.isprintable():
        return "the write key holds a control character or an unpaired surrogate"
    return None


def basic_auth_user(header: str) -> str | None:
    """The user name of an HTTP Basic `Authorization` header, the colon optional; None when
    the header uses another scheme. Raises ValueError for a Basic header that does not decode
    to UTF-8 text."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("the Basic credentials are not base64 of UTF-8 'key:'") from None
    return decoded.partition(":")[0]


class WriteKeys:
    """The keys a collector accepts. With none configured every well-formed key is accepted
    (it still names the source of the events): the open mode for a collector on one machine."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        if isinstance(keys, str):
            raise ConfigError("write_keys", "must be a list of keys, not one string")
        accepted = []
        for key in keys:
            problem = key_problem(key)
            if problem is not None:
                raise ConfigError("write_keys", problem)
            accepted.append(key.encode())
        self._keys = tuple(accepted)

    @property
    def open(self) -> bool:
        """Whether any well-formed key is accepted."""
        return not self._keys

    def accepts(self, key: str) -> bool:
        """Whether `key` may write: well formed (`key_problem`), and configured or the mode
        open. Compared in constant time, against every configured key, so the answer's timing
        tells nothing about how close a guess was."""
        if key_problem(key) is not None:
            return False
        if not self._keys:
            return True
        candidate = key.encode()
        matched = False
        for known in self._keys:
            matched |= hmac.compare_digest(candidate, known)
        return matched


def read_key_file(path: str | Path) -> list[str]:
    """The write keys in a file: one per line; blank lines and lines starting with `#` are
    skipped, surrounding whitespace is not part of a key. Raises ConfigError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("write_key_file", f"cannot read {str(path)!r}: {exc}") from None
    keys = [line.strip() for line in text.splitlines()]
    return [key for key in keys if key and not key.startswith("#")]


def key_id(secret: bytes, key: str) -> str:
    """The id stored and shown instead of `key`: `<prefix>~<hash>`.

    The prefix is the key's first characters, at most 4 and at most a third of the key, and
    only while they are letters, digits, `-`, `_` or `.`: short keys show nothing of
    themselves, and an id is safe in a URL, a header or a terminal. The hash is the first 12
    hex digits of HMAC-SHA256 of the key under the store's `secret`.
    """
    visible = key[: min(4, len(key) // 3)]
    prefix = "".join(itertools.takewhile(_PREFIX_CHARACTERS.__contains__, visible))
    # surrogatepass: a store written by an earlier release may hold keys no check ever saw.
    data = key.encode("utf-8", "surrogatepass")
    digest = hmac.new(secret, data, hashlib.sha256).hexdigest()
    return f"{prefix}~{digest[:KEY_ID_HEX_DIGITS]}"


class KeyIds:
    """Key ids under one store's secret, remembered for the keys a collector sees again and
    again (an HMAC per request is cheap, a dict lookup cheaper)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a key id secret must have at least 16 bytes")
        self._secret = secret
        self._known: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        found = self._known.get(key)
        if found is None:
            if len(self._known) >= _CACHED_IDS:
                self._known.clear()
            found = self._known[key] = key_id(self._secret, key)
        return found
