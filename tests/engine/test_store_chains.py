"""The `responses` backend's response chains beyond the contract (tests/engine/test_store_contract.py): a database
from before them gains their table and keeps its data, on either store, and `switchboard migrate-store` copies them."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from storage.base import ChainRecord
from storage.copy import copy_sqlite_to_postgres
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore
from tests.engine.test_store_contract import msg


async def test_a_version_6_sqlite_database_gains_the_chains_table_and_keeps_its_data(tmp_path):
    from storage.schema import MIGRATIONS, SCHEMA_VERSION

    with closing(sqlite3.connect(tmp_path / "s.db")) as conn:
        conn.executescript("".join(MIGRATIONS[:6]) + "; PRAGMA user_version=6;")
        conn.execute("INSERT INTO chat_threads(thread_id, created_at) VALUES ('chat_1', 1.0)")
        conn.commit()
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert await store.chat_thread("chat_1") is not None
        await store.create_chain("chain_1")
        assert await store.advance_chain("chain_1", None, "resp_1")
        assert await store.chain("chain_1") == ChainRecord("chain_1", "resp_1", ())
    finally:
        await store.close()
    with closing(sqlite3.connect(tmp_path / "s.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_5_postgres_database_gains_the_chains_table_and_keeps_its_data(pg_cluster, pg_url):
    from storage.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION

    database = pg_url.rsplit("/", 1)[1]
    pg_cluster.psql("CREATE TABLE switchboard_schema (version INTEGER NOT NULL);" + "".join(PG_MIGRATIONS[:5])
                    + "INSERT INTO switchboard_schema VALUES (1), (2), (3), (4), (5);"
                    " INSERT INTO chat_threads(thread_id, created_at) VALUES ('chat_1', 1.0)", database)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store.chat_thread("chat_1") is not None
        await store.create_chain("chain_1")
        await store.cancel_chain_calls("chain_1", ["call_a"])
        assert await store.chain("chain_1") == ChainRecord("chain_1", None, ("call_a",))
    finally:
        await store.close()
    assert pg_cluster.psql("SELECT max(version) FROM switchboard_schema", database).strip() == str(PG_SCHEMA_VERSION)


async def test_migrate_store_copies_the_chains_heads_and_cancelled_calls(tmp_path, pg_url):
    db = str(tmp_path / "s.db")
    source = SQLiteStore(db)
    await source.open()
    await source.add_inbound(msg("e1"))
    await source.set_main_thread("c1", 0, "chain_1")
    for thread in ("chain_1", "chain_2", "chain_3"):
        await source.create_chain(thread)
    await source.advance_chain("chain_1", None, "resp_1")
    await source.cancel_chain_calls("chain_1", ["call_b", "call_a"])
    await source.advance_chain("chain_2", None, "resp_2")
    await source.close()

    target = PostgresStore(pg_url)
    await target.open()
    try:
        for _ in range(2):  # idempotent: the second copy changes nothing
            copied = await copy_sqlite_to_postgres(db, target)
            assert copied["response_chains"] == 3
        assert await target.chain("chain_1") == ChainRecord("chain_1", "resp_1", ("call_b", "call_a"))
        assert await target.chain("chain_2") == ChainRecord("chain_2", "resp_2", ())
        assert await target.chain("chain_3") == ChainRecord("chain_3", None, ())
        # the copy goes on as it left off: the compare-and-set sees the copied head
        assert not await target.advance_chain("chain_1", None, "resp_9")
        assert await target.advance_chain("chain_1", "resp_1", "resp_9")
        assert await target.chain("chain_1") == ChainRecord("chain_1", "resp_9", ())
    finally:
        await target.close()
