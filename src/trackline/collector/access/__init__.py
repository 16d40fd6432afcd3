"""Who may do what with a collector. One module per question:

```
keys.py     write keys: well formed, accepted; the key ids stored and shown instead of keys
hosts.py    which Host a request may name (DNS rebinding)
origins.py  which web origins may change data (cross-site requests; CORS reuses it)
reads.py    who may read: the read token, its bearer header and login cookie; else loopback
network.py  the client's address (trusted proxies only), loopback, the open-bind rule
guard.py    the ASGI layer before routing: the Host check, the Caller, nosniff
```
"""

from __future__ import annotations

from trackline.collector.access.guard import Caller, Guard, caller
from trackline.collector.access.hosts import Hosts
from trackline.collector.access.keys import (
    MAX_KEY_CHARS,
    KeyIds,
    WriteKeys,
    basic_auth_user,
    key_id,
    key_problem,
    read_key_file,
)
from trackline.collector.access.network import (
    Clients,
    OpenBindError,
    check_bind,
    is_loopback,
    is_loopback_bind,
)
from trackline.collector.access.origins import Origins, normalise_origin, own_origin
from trackline.collector.access.reads import ReadAccess

__all__ = [
    "MAX_KEY_CHARS",
    "Caller",
    "Clients",
    "Guard",
    "Hosts",
    "KeyIds",
    "OpenBindError",
    "Origins",
    "ReadAccess",
    "WriteKeys",
    "basic_auth_user",
    "caller",
    "check_bind",
    "is_loopback",
    "is_loopback_bind",
    "key_id",
    "key_problem",
    "normalise_origin",
    "own_origin",
    "read_key_file",
]
