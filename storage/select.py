"""Which `Store` a database location names: a `postgresql://` (or `postgres://`) URL is PostgreSQL, anything else
a SQLite file path (the embedded default). Building a store opens nothing; `await store.open()` does.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from storage.base import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def redacted(location: str) -> str:
    """The location without a password, for logs, errors and status output."""
    parts = urlsplit(location)
    if not is_postgres(location) or parts.password is None:
        return location
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def store_for(location: str, *, owner: str | None = None, pool_size: int | None = None) -> Store:
    """The store at `location`. `owner` (PostgreSQL only): this instance's id, so its writes are fenced by
    conversation leases; `pool_size`: the PostgreSQL connection pool's size."""
    if is_postgres(location):
        from storage.postgres import DEFAULT_POOL_SIZE, PostgresStore

        return PostgresStore(location, owner=owner, pool_size=pool_size or DEFAULT_POOL_SIZE)
    from storage.sqlite import SQLiteStore

    return SQLiteStore(location)
