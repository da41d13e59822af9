"""Fixtures every suite may use: the OpenAI emulator (`emu`, fast retries); a real PostgreSQL server for the whole
session (started on first use, on 127.0.0.1 on a free port, deleted at the end) and a fresh database on it per test.
No mocks of the database.

Outside CI a machine without PostgreSQL skips those tests, saying why; in CI (`CI` set) that is an error instead.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from emulator import Emulator, run_emulator
from fakes.pg_cluster import ClusterUnavailable, PgCluster

_databases = itertools.count(1)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(retry_after=0.01) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = PgCluster.start()
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not installed here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a new, empty database on the session's server."""
    return pg_cluster.create_database(f"t{os.getpid()}_{next(_databases)}")


STORES = ("sqlite", "postgres")


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under test: every test that takes this fixture (or `store_url`) runs once per store."""
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """Where a fresh store of `store_kind` lives: a SQLite file, or a new PostgreSQL database."""
    if store_kind == "sqlite":
        return str(tmp_path / "s.db")
    return str(request.getfixturevalue("pg_url"))
