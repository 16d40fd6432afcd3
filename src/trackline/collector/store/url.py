"""Database names as users write them: which engine a name asks for, and a URL fit to print.

No driver is imported here, so the command line can tell and show a PostgreSQL URL on a
machine without the `postgres` extra.
"""

from __future__ import annotations

import urllib.parse


def is_postgres_url(database: object) -> bool:
    """Whether `database` names a PostgreSQL database (a `postgresql://` or `postgres://` URL)."""
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """`url` with its password (in the user part or as a `password=` parameter) replaced."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        query = [(name, "***" if name == "password" else value) for name, value in query]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="*"))
    )
