"""The stores: the `Store` contract runs against SQLite and a real PostgreSQL server alike (`store_url`), then each
store's own schema versioning and errors."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from storage.base import InboxMessage, StoreError, TurnRecord, TurnUpdate
from storage.schema import SCHEMA_VERSION
from storage.select import store_for
from storage.sqlite import SQLiteStore


def message(event_id: str, text: str = "hi") -> InboxMessage:
    return InboxMessage(event_id, "c1", "console", "ch", "u1", text, {"k": "v"}, time.time())


def stored_text(store_kind: str, text: str) -> str:
    """PostgreSQL text cannot hold NUL: its store keeps U+FFFD in its place (storage/postgres.py)."""
    return text.replace("\u0000", "\ufffd") if store_kind == "postgres" else text


async def test_schema_is_versioned_and_wal(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SQLiteStore(tmp_path / "s.db")
    await again.open()  # reopening applies nothing twice
    await again.close()


async def test_newer_schema_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this Switchboard"):
        await SQLiteStore(tmp_path / "s.db").open()


async def test_inbox_is_idempotent_and_keeps_order_and_sql_metacharacters(store_url, store_kind):
    store = store_for(store_url)
    await store.open()
    assert await store.add_inbound(message("e1", "first'; DROP TABLE inbox; --"))
    assert not await store.add_inbound(message("e1", "retry"))
    assert await store.add_inbound(message("e2", "second \u0000 \u202e"))
    pending = await store.pending_inbound("c1")
    second = stored_text(store_kind, "second \u0000 \u202e")
    assert [m.text for m in pending] == ["first'; DROP TABLE inbox; --", second]
    assert pending[0].route == {"k": "v"}
    await store.close()


async def test_turn_updates_survive_reopen(store_url):
    store = store_for(store_url)
    await store.open()
    now = time.time()
    await store.create_turn(TurnRecord("t1", "c1", 0, "received", now, now))
    await store.update_turn("t1", TurnUpdate(state="replied", reply_kind="answer", reply_text="ok", add_retries=2))
    await store.close()
    reopened = store_for(store_url)
    await reopened.open()
    turn = await reopened.get_turn("t1")
    assert (turn.state, turn.reply_text, turn.retries) == ("replied", "ok", 2)
    assert [t.id for t in await reopened.unfinished_turns()] == ["t1"]
    await reopened.close()


async def test_a_notice_turn_claims_its_messages_in_the_same_transaction(store_url):
    store = store_for(store_url)
    await store.open()
    for event in ("e1", "e2"):
        await store.add_inbound(message(event, "waiting"))
    now = time.time()
    notice = TurnRecord("t1", "c1", 0, "replied", now, now, reply_kind="notice", reply_text="reset")
    await store.create_turn(notice, claim=["e1", "e2"])
    assert await store.pending_inbound("c1") == []
    assert [m.event_id for m in await store.inbound_for_turn("t1")] == ["e1", "e2"]
    await store.add_inbound(message("e3", "later"))
    with pytest.raises(StoreError):  # a second turn with that id: nothing of it lands, e3 stays pending
        await store.create_turn(notice, claim=["e3"])
    assert [m.event_id for m in await store.pending_inbound("c1")] == ["e3"]
    await store.close()


async def test_missing_folder_and_read_only_database_give_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        await SQLiteStore(tmp_path / "nope" / "s.db").open()
    path = tmp_path / "ro.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; the read-only case is covered by the soak suite")
    ro = SQLiteStore(path)
    await ro.open()
    with pytest.raises(StoreError, match="write failed"):
        await ro.add_inbound(message("e1"))
    await ro.close()


async def test_concurrent_writers_never_lose_each_others_rows(store_url):
    """Regression: a transaction of one coroutine must not swallow or roll back another coroutine's write."""
    import asyncio

    store = store_for(store_url)
    await store.open()

    async def one(i: int) -> None:
        key = f"c{i}"
        await store.add_inbound(InboxMessage(f"e{i}", key, "console", "ch", "u", "hi", {}, time.time()))
        await store.set_main_thread(key, 0, f"thread_{i}")  # a single-statement write between two transactions
        record = await store.get_conversation(key)
        assert record is not None and (record.key, record.main_thread) == (key, f"thread_{i}")
        await store.claim_inbound([f"e{i}"], f"t{i}")

    await asyncio.gather(*(one(i) for i in range(300)))
    assert len(await store.conversations()) == 300
    for i in (0, 150, 299):
        assert [m.event_id for m in await store.inbound_for_turn(f"t{i}")] == [f"e{i}"]
    await store.close()


async def test_a_version_1_database_gains_the_chat_tables_and_keeps_its_data(tmp_path):
    from storage.schema import MIGRATIONS

    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO audit(at, platform, actor, action, target, outcome) VALUES (1,'p','a','x','t','o')")
        conn.execute("PRAGMA user_version=1")
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    assert len(await store.recent_audit()) == 1
    await store.create_chat_thread("chat_1", [{"role": "user", "content": "hi"}])
    assert [m.message["content"] for m in (await store.chat_thread("chat_1")).messages] == ["hi"]
    await store.close()


async def test_postgres_schema_is_versioned_and_a_newer_one_is_refused(pg_cluster, pg_url):
    from storage.pg_schema import PG_SCHEMA_VERSION
    from storage.postgres import PostgresStore

    for _ in range(2):  # reopening applies nothing twice
        store = PostgresStore(pg_url)
        await store.open()
        await store.close()
    database = pg_url.rsplit("/", 1)[1]
    assert pg_cluster.psql("SELECT array_agg(version ORDER BY version) FROM switchboard_schema", database).strip() == (
        "{" + ",".join(str(v) for v in range(1, PG_SCHEMA_VERSION + 1)) + "}")
    pg_cluster.psql(f"INSERT INTO switchboard_schema VALUES ({PG_SCHEMA_VERSION + 1})", database)
    with pytest.raises(StoreError, match="newer than this Switchboard"):
        await PostgresStore(pg_url).open()


async def test_a_version_2_postgres_database_gains_the_chat_and_access_tables_and_keeps_its_data(pg_cluster, pg_url):
    from storage.pg_schema import PG_MIGRATIONS
    from storage.postgres import PostgresStore

    database = pg_url.rsplit("/", 1)[1]
    pg_cluster.psql("CREATE TABLE switchboard_schema (version INTEGER NOT NULL);" + PG_MIGRATIONS[0] + PG_MIGRATIONS[1]
                    + "INSERT INTO switchboard_schema VALUES (1), (2);"
                    " INSERT INTO inbox(event_id, conversation, platform, channel, user_id, text, route, received_at)"
                    " VALUES ('e1', 'c1', 'console', 'ch', 'u', 'hi', '{}', 1.0)", database)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert [m.event_id for m in await store.pending_inbound("c1")] == ["e1"]
        await store.create_chat_thread("chat_1", [{"role": "user", "content": "hi"}])
        assert await store.admit_inbound(message("e2"), {"u": 1}, 5) == ""
        assert await store.admit_inbound(message("e3"), {"u": 1}, 5) == "u"
    finally:
        await store.close()


async def test_postgres_errors_name_the_server_but_never_the_password():
    from storage.postgres import PostgresStore
    from storage.select import redacted

    url = "postgresql://bot:s3cret-pw@127.0.0.1:9/switchboard"  # nothing listens on port 9
    assert redacted(url) == "postgresql://bot:***@127.0.0.1:9/switchboard"
    with pytest.raises(StoreError, match="cannot open database") as caught:
        await PostgresStore(url).open()
    assert "s3cret-pw" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)


async def test_a_version_3_database_is_migrated_to_the_v4_indexes_and_keeps_its_data(tmp_path):
    from storage.schema import MIGRATIONS

    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.executescript("".join(MIGRATIONS[:3]) + "; PRAGMA user_version=3;")
        conn.execute("INSERT INTO inbox(event_id, conversation, platform, channel, user_id, text, route, received_at,"
                     " seq) VALUES ('e1', 'c1', 'console', 'ch', 'u', 'hi', '{}', 1.0, 1)")
        conn.execute("INSERT INTO usage(day, bucket, input_tokens) VALUES ('2026-12-01', 'bot', 7)")
        conn.execute("INSERT INTO chat_threads(thread_id, created_at) VALUES ('chat_1', 1.0)")
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    assert await store.conversations_with_pending() == ["c1"]
    assert [r.input_tokens for r in await store.usage_on("2026-12-01")] == [7]
    assert await store.chat_thread("chat_1") is not None
    assert await store.add_inbound(message("e2"))
    assert [m.event_id for m in await store.pending_inbound("c1")] == ["e1", "e2"]
    await store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT MAX(seq) FROM inbox").fetchall()
    assert "inbox_seq" in str(plan)
