"""`forget user`: what a person wrote, and every turn built on it, leaves the database (every table, and the bytes of
the file), and the provider threads that saw it are deleted; other people's conversation goes on, rebuilt from what
remains. Runs once per backend, and on both stores: on PostgreSQL every table is scanned (the bytes of its files are
not: its WAL keeps old row versions until recycled, README "Access and budgets")."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from bot.types import Actor, CommandContext
from emulator import Emulator
from tests.engine.harness import inbound, remote_runs, running_bot, team, thread_texts

SECRET = "zebra-alice-7731"
BOB_WORDS = "bob-keeps-this-4410"
SHARED = "console:test:shared"
ADMIN = CommandContext(Actor("console", "operator:root", platform_admin=True), channel="console:test")

def is_pg(db: Path | str) -> bool:
    return str(db).startswith("postgresql://")


def psql(url: str, sql: str) -> list[str]:
    """Rows of `sql`, read by `psql` (another client than the store's)."""
    from fakes.pg_cluster import pg_bin

    binary = shutil.which("psql") or str(pg_bin() / "psql")
    done = subprocess.run([binary, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, url],
                          check=True, capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line]


def pg_tables_containing(url: str, needle: str) -> dict[str, int]:
    tables = psql(url, "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")
    assert {"inbox", "turns", "runs", "tool_calls", "transcript", "audit", "usage", "chat_messages"} <= set(tables)
    found: dict[str, int] = {}
    for table in tables:  # a whole row as text: every column at once
        [hits] = psql(url, f"SELECT count(*) FROM {table} AS r WHERE strpos(r::text, '{needle}') > 0")
        if int(hits):
            found[table] = int(hits)
    return found


def tables_containing(db: Path | str, needle: str) -> dict[str, int]:
    """Every table of the database, every column: how many rows mention `needle`."""
    if is_pg(db):
        return pg_tables_containing(str(db), needle)
    found: dict[str, int] = {}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"inbox", "turns", "runs", "tool_calls", "transcript", "audit", "usage"} <= set(tables)
        for table in tables:
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            hits = sum(1 for row in rows if any(needle in str(value) for value in row))
            if hits:
                found[table] = hits
    return found


def file_bytes(db: Path | str) -> bytes:
    if is_pg(db):
        return b""  # see the module's docstring
    return b"".join(p.read_bytes() for p in (Path(db), Path(f"{db}-wal")) if p.exists())


def live_threads_with(emu: Emulator, db: Path | str, needle: str) -> list[str]:
    """The threads that still hold `needle`: at the provider (and the responses it stores), and the chat backend's,
    which live in our database."""
    live = [c for c in emu.conversations.values() if not c.deleted]
    found = [c.id for c in live if any(needle in str(item) for item in c.items)]
    found += [r.id for r in emu.responses.values() if r.store and needle in str([r.input_items, r.output])]
    found += [t.id for t in emu.threads.values() if not t.deleted and any(needle in m.text for m in t.messages)]
    if is_pg(db):
        sql = f"SELECT DISTINCT thread_id FROM chat_messages WHERE strpos(message, '{needle}') > 0"
        return found + psql(str(db), sql)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT DISTINCT thread_id FROM chat_messages WHERE message LIKE ?", (f"%{needle}%",))
        found += [r[0] for r in rows]
    return found


async def test_forget_leaves_no_trace_of_the_users_text(emu, store_url, backend):
    db = store_url
    async with running_bot(team(emu.base_url, db, backend=backend)) as (bot, surface):
        await bot.accept(inbound(f"ask the critic about {SECRET}", user="alice", conversation="console:test:a1"))
        await bot.accept(inbound(f"hello {BOB_WORDS}", user="bob", conversation=SHARED))
        await surface.wait_for(2)
        await bot.accept(inbound(f"and ask the researcher about {SECRET}", user="alice", conversation=SHARED))
        await surface.wait_for(3)
        await bot.idle()
        assert set(tables_containing(db, SECRET)) >= {"inbox", "turns", "transcript", "runs", "tool_calls"}
        assert len(live_threads_with(emu, db, SECRET)) >= 3  # alice's main, critic; the shared main, researcher

        result = await bot.command(ADMIN, "forget user console:alice")
        assert result.ok, result.text
        assert result.text.startswith("Forgot user:console:alice: 2 messages, 2 turns, 2 conversations")

        assert tables_containing(db, SECRET) == {}
        # left by id only: the forget's own audit entry, and today's token counts (budgets must not reset)
        assert tables_containing(db, "alice") == {"audit": 1, "usage": 1}
        assert SECRET.encode() not in file_bytes(db)
        assert live_threads_with(emu, db, SECRET) == []
        [entry] = [e for e in await bot.store.recent_audit() if e.action == "forget"]
        assert (entry.target, entry.outcome) == ("user:console:alice", "done")

        # bob's conversation goes on, on a thread rebuilt from what remains: his words, none of alice's
        await bot.accept(inbound("what did I say?", user="bob", conversation=SHARED))
        [*_, (_, reply)] = await surface.wait_for(4)
        assert reply.kind == "answer"
        conversation = await bot.store.get_conversation(SHARED)
        texts = thread_texts(emu, conversation.main_thread)
        assert any(BOB_WORDS in t for t in texts) and not any(SECRET in t for t in texts)
        assert tables_containing(db, BOB_WORDS)["inbox"] == 1


async def test_forget_is_for_admins_and_leaves_others_alone(emu, tmp_path):
    db = tmp_path / "db"
    async with running_bot(team(emu.base_url, db)) as (bot, surface):
        await bot.accept(inbound(f"hi {BOB_WORDS}", user="bob"))
        await surface.wait_for(1)
        nobody = CommandContext(Actor("console", "mallory"), channel="console:test")
        refused = await bot.command(nobody, "forget user console:bob")
        assert not refused.ok
        assert tables_containing(db, BOB_WORDS)["inbox"] == 1
        result = await bot.command(ADMIN, "forget user console:carol")
        assert result.ok and "0 messages, 0 turns" in result.text
        assert tables_containing(db, BOB_WORDS)["inbox"] == 1


async def test_forget_during_a_running_turn_stops_it_and_strands_nothing(emu, store_url, backend):
    from emulator import Rule, Script

    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    db = store_url
    async with running_bot(team(emu.base_url, db, backend=backend)) as (bot, surface):
        await bot.accept(inbound(f"ask the critic about {SECRET}", user="alice", conversation=SHARED))
        await emu.wait_until(lambda: bool(remote_runs(emu, "critic")))
        await bot.accept(inbound(f"meanwhile {BOB_WORDS}", user="bob", conversation=SHARED))  # waits behind it
        result = await bot.command(ADMIN, "forget user console:alice")
        assert result.ok, result.text
        [(_, reply)] = await surface.wait_for(1)  # bob's message is answered; alice's turn is gone
        await bot.idle()
        assert reply.text == f"You said: meanwhile {BOB_WORDS}"
        assert await bot.store.unfinished_turns() == []
        assert await bot.store.pending_inbound(SHARED) == []
        # the chat backend stops its run by closing the stream, which the server notices on its next check
        await emu.wait_until(lambda: [r.status for r in remote_runs(emu, "critic")] == ["cancelled"])
        assert tables_containing(db, SECRET) == {}
        assert live_threads_with(emu, db, SECRET) == []


async def test_a_provider_refusing_deletes_is_reported_not_hidden(emu, tmp_path):
    """The provider fails every delete of a stored response (HTTP 500, OpenAPI: DELETE /responses/{id}; the SDK's
    own retries fail too): our database is scrubbed all the same, and the reply counts only what was deleted."""
    db = tmp_path / "db"
    async with running_bot(team(emu.base_url, db)) as (bot, surface):
        await bot.accept(inbound(f"ask the critic about {SECRET}", user="alice", conversation="console:test:a1"))
        await surface.wait_for(1)
        await bot.idle()
        stored = [r.id for r in emu.responses.values() if r.store and SECRET in str([r.input_items, r.output])]
        emu.faults.http_error(500, method="DELETE", path="/v1/responses/*", count=None)
        result = await bot.command(ADMIN, "forget user console:alice")
        assert result.ok, result.text
        done, wanted = map(int, result.text.rsplit(", ", 1)[1].split(" ", 1)[0].split("/"))
        assert (done, wanted) == (2, 2 + len(stored)) and stored  # the main and the critic's threads only
        assert tables_containing(db, SECRET) == {}
        assert [r.id for r in emu.responses.values() if r.store and r.id in stored] == stored
