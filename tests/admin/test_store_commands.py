"""`switchboard migrate-store` (SQLite into a real PostgreSQL, idempotent), `switchboard prune`, and the admin
commands through the database when the team runs on PostgreSQL."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from contextlib import closing

from bot.config import StorageConfig
from emulator import Rule, Script
from storage.base import AuditEntry, RunRecord, ToolCallRecord, TranscriptEntry, TurnRecord, TurnUpdate
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore
from tests.admin.test_cli_admin import CONV, cli, team_file
from tests.engine.harness import inbound, running_bot, team
from tests.engine.test_store_contract import msg

TABLES = ("conversations", "sub_threads", "inbox", "turns", "runs", "tool_calls", "transcript", "audit", "agents",
          "chat_threads", "chat_messages", "chat_runs", "chat_summaries", "thread_providers", "rate_counters", "usage")


async def fill(store: SQLiteStore) -> None:
    await store.add_inbound(msg("e1", text="first \u0000 question"))
    await store.add_inbound(msg("e2"))
    now = time.time()
    turn = TurnRecord("t1", "c1", 0, "running", now, now)
    await store.start_turn(turn, [msg("e1", text="first \u0000 question")], "main")
    await store.record_run(RunRecord("r1", "t1", "proxy", "proxy", "th", "completed", 1, [{"x": 1}]))
    await store.record_tool_call(ToolCallRecord("t1", "proxy", "call", "ask_critic", "{}"))
    await store.finish_tool_call("t1", "proxy", "call", "ok", True)
    await store.record_reply(turn, TurnUpdate(state="delivering", reply_kind="answer", reply_text="an answer"), "main")
    await store.finish_delivery("t1", "ref", ["e1"])
    await store.set_sub_thread("c1", 0, "critic", "sub_1")
    await store.set_agent("responses", "proxy", "p1", "h")
    await store.add_audit(AuditEntry(now, "console", "op", "reset", "c1", "done"))
    await store.append_transcript("c1", 0, "critic", TranscriptEntry("user", "task"))
    await store.create_chat_thread("chat_1", [{"role": "user", "content": "seed"}])
    await store.finish_chat_run("crun_1", "chat_1", [{"role": "assistant", "content": "reply"}], {"status": "done"})
    await store.add_chat_summary("chat_1", 1, "they said seed")
    await store.set_thread_provider("chat_1", "chat|m|K|")
    assert await store.admit_inbound(msg("e9", conversation="c9"), {"user:slack:u1": 5}, 42) == ""
    await store.add_usage("2026-12-01", ["bot", "user:slack:u1"], input_tokens=3, output_tokens=4, cost=0.5)


def counts(path: str) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


async def test_migrate_store_copies_everything_and_is_idempotent(tmp_path, pg_cluster, pg_url):
    db = str(tmp_path / "db")
    source = SQLiteStore(db)
    await source.open()
    await fill(source)
    await source.close()
    config = team_file(tmp_path, "http://127.0.0.1:9/v1")
    for _ in range(2):  # the second run changes nothing
        code, out, err = await cli("migrate-store", "--config", str(config), "--to", pg_url)
        assert code == 0, err
        assert "conversations 2" in out and "inbox 3" in out and "transcript 3" in out and "chat_messages 2" in out
    for table, n in counts(db).items():
        assert int(pg_cluster.psql(f"SELECT COUNT(*) FROM {table}", pg_url.rsplit("/", 1)[1])) == n, table

    target = PostgresStore(pg_url)
    await target.open()
    try:
        assert [e.text for e in await target.transcript("c1", 0, "main")] == ["first \ufffd question", "an answer"]
        assert [m.event_id for m in await target.pending_inbound("c1")] == ["e2"]
        delivered = await target.get_turn("t1")
        assert delivered is not None and (delivered.state, delivered.delivered_ref) == ("delivered", "ref")
        call = await target.get_tool_call("t1", "proxy", "call")
        assert call is not None and call.ok is True
        assert await target.get_agent("responses", "proxy") == ("p1", "h")
        thread = await target.chat_thread("chat_1")
        assert thread is not None and thread.summary == "they said seed"
        assert [m.message["content"] for m in thread.messages] == ["reply"]
        assert await target.chat_run("crun_1") == {"status": "done"}
        assert await target.thread_provider("chat_1") == "chat|m|K|"
        [bot, user] = await target.usage_on("2026-12-01")
        assert (bot.tokens, user.cost) == (7, 0.5)
        # the copied rate count holds: 4 more in that minute, then the bucket is full
        for i in range(4):
            assert await target.admit_inbound(msg(f"f{i}", conversation="c9"), {"user:slack:u1": 5}, 42) == ""
        assert await target.admit_inbound(msg("f9", conversation="c9"), {"user:slack:u1": 5}, 42) == "user:slack:u1"
        await target.finish_chat_run("crun_2", "chat_1", [{"role": "assistant", "content": "next"}], {})
        assert [m.message["content"] for m in (await target.chat_thread("chat_1")).messages] == ["reply", "next"]
        # new rows continue after the copied ones
        await target.add_inbound(msg("e3"))
        assert [m.event_id for m in await target.pending_inbound("c1")] == ["e2", "e3"]
        await target.add_audit(AuditEntry(time.time(), "console", "op", "cancel", "c1", "done"))
        assert [a.action for a in await target.recent_audit()] == ["cancel", "reset"]
    finally:
        await target.close()


async def test_migrate_store_refuses_a_url_that_is_not_postgres_and_a_missing_file(tmp_path):
    config = team_file(tmp_path, "http://127.0.0.1:9/v1")
    code, _, err = await cli("migrate-store", "--config", str(config), "--to", "mysql://x/y")
    assert code == 2 and "postgresql://" in err
    code, _, err = await cli("migrate-store", "--config", str(config), "--to", "postgresql://127.0.0.1:9/x")
    assert code == 1 and "no SQLite database" in err


async def test_prune_command_reports_what_it_deleted(tmp_path, store_url):
    config = team_file(tmp_path, "http://127.0.0.1:9/v1", extra="[retention]\naudit_days = 1\n")
    store = SQLiteStore(store_url) if not store_url.startswith("postgresql") else PostgresStore(store_url)
    await store.open()
    await store.add_audit(AuditEntry(time.time() - 3 * 86_400, "console", "op", "reset", "c1", "done"))
    await store.add_audit(AuditEntry(time.time(), "console", "op", "cancel", "c1", "done"))
    await store.close()
    code, out, err = await cli("prune", "--config", str(config), env={"SWITCHBOARD_DB": store_url})
    assert code == 0, err
    assert "pruned 1 row(s)" in out and "audit 1" in out


async def test_cli_cancel_on_postgres_goes_through_the_database_to_the_owning_instance(emu, tmp_path, pg_url):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    config = team_file(tmp_path, emu.base_url)
    cfg = dataclasses.replace(team(emu.base_url, pg_url), storage=StorageConfig(lease_seconds=1.0))
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        await surface.wait_event("delegated")
        code, out, err = await cli("cancel", "--config", str(config), "--conversation", CONV,
                                   env={"SWITCHBOARD_DB": pg_url})
        assert code == 0, err
        assert out.strip() == "Cancelled the running turn."
        # the CLI took the lease (fencing the bot's turn) and gave it back: the bot delivers the notice, once
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.kind == "notice" and len(surface.deliveries) == 1
        # the critic's run was cancelled by the CLI; a run the bot may have made before its next write was refused
        # was never recorded (a provider call cannot be fenced; tests/engine/test_instances.py)
        critics = sorted((r for r in emu.responses.values() if r.agent == "critic"), key=lambda r: r.created_tick)
        assert critics[0].status == "cancelled" and critics[0].cancelled_by == "client"
        assert isinstance(bot.store, PostgresStore)
        recorded = await bot.store._fetch("SELECT remote_id FROM runs WHERE agent = 'critic'")
        assert [r["remote_id"] for r in recorded] == [critics[0].id]


async def test_cli_usage_grant_and_forget_on_postgres_go_through_the_database(emu, tmp_path, pg_url):
    from tests.engine.test_forget import tables_containing

    config = team_file(tmp_path, emu.base_url, "[budgets]\nuser_tokens_per_day = 1000000\n")
    env = {"SWITCHBOARD_DB": pg_url}
    cfg = dataclasses.replace(team(emu.base_url, pg_url), storage=StorageConfig(lease_seconds=1.0))
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("pg-secret-5521", user="alice"))
        await bot.accept(inbound("bob-pg-words", user="bob", conversation="console:test:bob"))
        await surface.wait_for(2)
        await bot.idle()
        code, out, err = await cli("usage", "--config", str(config), env=env)
        assert code == 0 and "user:console:alice:" in out, err
        code, out, err = await cli("grant", "--config", str(config), "user", "console:alice", "500", env=env)
        assert code == 0 and out.strip() == "Granted 500 tokens to user:console:alice for today (UTC).", err
        [row] = await bot.store.usage_on(time.strftime("%Y-%m-%d", time.gmtime()), ["user:console:alice"])
        assert row.granted_tokens == 500  # the running instance sees the grant: one database
        code, _, err = await cli("reload", "--config", str(config), env=env)
        assert code == 1 and "SIGHUP" in err
        code, out, err = await cli("forget", "--config", str(config), "--user", "alice", env=env)
        assert code == 0 and out.startswith("Forgot user:*:alice: 1 messages, 1 turns"), err
        assert tables_containing(pg_url, "pg-secret-5521") == {}
        assert tables_containing(pg_url, "bob-pg-words")["inbox"] == 1
        # the conversation goes on: the instance owns it again after the CLI gave the lease back
        await bot.accept(inbound("again", user="bob", conversation="console:test:bob"))
        await surface.wait_for(3)
        assert [e.action for e in (await bot.store.recent_audit(3))] == ["forget", "grant", "usage"]


async def test_migrate_store_copies_every_column_of_every_sqlite_table(tmp_path):
    """A column added by a later SQLite migration and missing from storage/copy.py would be dropped silently."""
    from storage.copy import TABLES as COPIED

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await store.close()
    with closing(sqlite3.connect(tmp_path / "s.db")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in names}
    copied = {t.name: set(t.columns) for t in COPIED}
    assert {t for t in names if not t.startswith("sqlite_")} == set(copied)
    for name, expected in copied.items():
        assert columns[name] == expected, name
