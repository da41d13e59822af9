"""The SQLite `Store`: the SQL of each operation of the contract in `storage.base`, on a WAL-mode file. Each
operation is one statement or one transaction, run whole on the store's own thread (`storage.sqlite_thread`), so it
lands entirely or not at all even when its caller is cancelled, and operations take effect in the order called.

Durability: `synchronous=NORMAL` in WAL mode, so a write survives the process dying once its call has returned; a
power cut may lose the last commits but never corrupts the file. Methods are in the order of the protocol's groups.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from storage.base import (
    UNFINISHED_TURN_STATES,
    AuditEntry,
    ChainRecord,
    ChatMessage,
    ChatThread,
    ConversationRecord,
    ForgetReport,
    InboxMessage,
    PruneCounts,
    RetentionPolicy,
    RunRecord,
    RunTokens,
    StoreError,
    TokenRow,
    ToolCallRecord,
    TranscriptEntry,
    TurnRecord,
    TurnUpdate,
    UsageRow,
)
from storage.handoffs import SQLiteHandoffs
from storage.retention import BATCH, prune_steps
from storage.schema import SCHEMA_VERSION
from storage.sqlite_thread import ConnectionThread, Statements

TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete", "superseded")
#: The tables that hold a chat-backend thread (its provider choice, `thread_providers`, holds no text and stays).
CHAT_THREAD_TABLES = ("chat_threads", "chat_messages", "chat_summaries", "chat_runs")
#: Handoff rows of a conversation (issue 14), deleted with it by `forget_user`.
HANDOFF_CONVERSATION_TABLES = ("handoff_state", "handoffs", "turn_agents")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SQLiteStore(SQLiteHandoffs):
    """`Store` on a SQLite file. `path=":memory:"` works for tests that need no restart."""

    schema_version = SCHEMA_VERSION

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: ConnectionThread | None = None

    # ---- lifecycle ----

    async def open(self) -> None:
        if self.path != ":memory:":
            parent = await asyncio.to_thread(_missing_folder, self.path)
            if parent:
                raise StoreError(f"database folder {parent} does not exist (set SWITCHBOARD_DB to a writable path)")
        try:
            self._db = await ConnectionThread.open(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def writable(self) -> bool:
        """Takes and releases the write lock in one trip (waiting up to the busy timeout); writes nothing."""
        try:
            await self._opened.probe_write()
            return True
        except (sqlite3.Error, StoreError):
            return False

    async def set_pragma(self, name: str, value: int) -> None:
        """Set a connection-level PRAGMA (`query_only`, `max_page_count`, `busy_timeout`, ...) on the store's own
        connection, after every operation already called. Not part of `Store`: tests use it to make this store's
        database read-only or full, which another connection on the file cannot do for this one."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        await self._write(f"PRAGMA {name}={int(value)}")

    @property
    def _opened(self) -> ConnectionThread:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement, atomic on its own; returns its row count."""
        try:
            return (await self._opened.execute(sql, params)).rowcount
        except sqlite3.OperationalError as exc:
            raise StoreError(f"database write failed ({exc}); check that {self.path} is writable and not full") from exc

    async def _transaction(self, statements: Statements) -> int:
        """Several writes that land together or not at all; returns the row count of the last one."""
        try:
            return await self._opened.transaction(statements)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}); check that {self.path} is writable and not full") from exc

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return (await self._opened.execute(sql, params)).rows
        except sqlite3.OperationalError as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    async def _row(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    # ---- inbox ----

    async def add_inbound(self, message: InboxMessage) -> bool:
        inserted = await self._transaction([
            (
                "INSERT OR IGNORE INTO conversations(key, platform, channel, started_by, created_at)"
                " VALUES (?,?,?,?,?)",
                (message.conversation, message.platform, message.channel, message.user, message.received_at),
            ),
            (
                "INSERT OR IGNORE INTO inbox(event_id, conversation, platform, channel, user_id, text, route, state,"
                " received_at, seq) VALUES (?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox))",
                (message.event_id, message.conversation, message.platform, message.channel, message.user,
                 message.text, _dumps(dict(message.route)), message.state, message.received_at),
            ),
        ])
        return inserted == 1

    async def pending_inbound(self, conversation: str) -> list[InboxMessage]:
        rows = await self._rows(
            "SELECT * FROM inbox WHERE conversation=? AND state='pending' ORDER BY seq", (conversation,)
        )
        return [_inbox(r) for r in rows]

    async def conversations_with_pending(self) -> list[str]:
        rows = await self._rows("SELECT DISTINCT conversation FROM inbox INDEXED BY inbox_pending_conversations"
                                " WHERE state='pending'")
        return [str(r["conversation"]) for r in rows]

    async def claim_inbound(self, event_ids: list[str], turn_id: str) -> None:
        await self._transaction([
            ("UPDATE inbox SET state='in_turn', turn_id=? WHERE event_id=? AND state='pending'", (turn_id, e))
            for e in event_ids
        ])

    async def inbound_for_turn(self, turn_id: str) -> list[InboxMessage]:
        rows = await self._rows("SELECT * FROM inbox WHERE turn_id=? ORDER BY seq", (turn_id,))
        return [_inbox(r) for r in rows]

    # ---- turns and runs ----

    async def start_turn(self, turn: TurnRecord, messages: list[InboxMessage], thread_path: str) -> None:
        statements: Statements = [
            (
                "INSERT INTO turns(id, conversation, generation, state, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (turn.id, turn.conversation, turn.generation, turn.state, turn.created_at, turn.updated_at),
            )
        ]
        for message in messages:
            statements.append((
                "UPDATE inbox SET state='in_turn', turn_id=? WHERE event_id=? AND state='pending'",
                (turn.id, message.event_id),
            ))
            statements.append((
                "INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (turn.conversation, turn.generation, thread_path, "user", message.text, turn.id, turn.created_at),
            ))
        await self._transaction(statements)

    async def create_turn(self, turn: TurnRecord, claim: Sequence[str] = ()) -> None:
        statements: Statements = [(
            "INSERT INTO turns(id, conversation, generation, state, reply_kind, reply_text, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (turn.id, turn.conversation, turn.generation, turn.state, turn.reply_kind, turn.reply_text,
             turn.created_at, turn.updated_at),
        )]
        statements += [
            ("UPDATE inbox SET state='in_turn', turn_id=? WHERE event_id=? AND state='pending'", (turn.id, e))
            for e in claim
        ]
        await self._transaction(statements)

    async def record_reply(self, turn: TurnRecord, update: TurnUpdate, thread_path: str) -> None:
        statements = [self._turn_update_sql(turn.id, update)]
        if update.reply_kind == "answer" and update.reply_text is not None:
            statements.append((
                "INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (turn.conversation, turn.generation, thread_path, "assistant", update.reply_text, turn.id,
                 time.time()),
            ))
        await self._transaction(statements)

    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        statements = [self._turn_update_sql(turn_id, TurnUpdate(state="delivered", delivered_ref=delivered_ref))]
        statements += [("UPDATE inbox SET state='answered' WHERE event_id=?", (e,)) for e in event_ids]
        await self._transaction(statements)

    async def update_turn(self, turn_id: str, update: TurnUpdate) -> None:
        if await self._write(*self._turn_update_sql(turn_id, update)) != 1:
            raise StoreError(f"turn {turn_id} does not exist")

    @staticmethod
    def _turn_update_sql(turn_id: str, update: TurnUpdate) -> tuple[str, tuple[Any, ...]]:
        sets = ["updated_at=?"]
        params: list[Any] = [time.time()]
        for column in ("state", "reply_kind", "reply_text", "delivered_ref"):
            value = getattr(update, column)
            if value is not None:
                sets.append(f"{column}=?")
                params.append(value)
        for column, amount in (
            ("retries", update.add_retries),
            ("input_tokens", update.add_input_tokens),
            ("output_tokens", update.add_output_tokens),
        ):
            if amount:
                sets.append(f"{column}={column}+?")
                params.append(amount)
        return f"UPDATE turns SET {', '.join(sets)} WHERE id=?", (*params, turn_id)

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        row = await self._row("SELECT * FROM turns WHERE id=?", (turn_id,))
        return _turn(row) if row else None

    async def unfinished_turns(self, conversation: str | None = None) -> list[TurnRecord]:
        marks = ",".join("?" * len(UNFINISHED_TURN_STATES))
        sql = f"SELECT * FROM turns WHERE state IN ({marks})"
        params: list[Any] = list(UNFINISHED_TURN_STATES)
        if conversation is not None:
            sql += " AND conversation=?"
            params.append(conversation)
        rows = await self._rows(sql + " ORDER BY created_at", params)
        return [_turn(r) for r in rows]

    async def record_run(self, run: RunRecord) -> None:
        now = time.time()
        await self._write(
            "INSERT OR REPLACE INTO runs(remote_id, turn_id, scope, agent, thread_id, status, attempt, last_seq,"
            " input, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (run.remote_id, run.turn_id, run.scope, run.agent, run.thread_id, run.status, run.attempt, run.last_seq,
             _dumps(run.input), run.created_at or now, now),
        )

    async def update_run(self, remote_id: str, *, status: str, last_seq: int | None = None,
                         tokens: RunTokens | None = None) -> None:
        if tokens is None:
            await self._write(
                "UPDATE runs SET status=?, last_seq=COALESCE(?, last_seq), updated_at=? WHERE remote_id=?",
                (status, last_seq, time.time(), remote_id),
            )
            return
        await self._write(
            "UPDATE runs SET status=?, last_seq=COALESCE(?, last_seq), updated_at=?, input_tokens=?,"
            " cached_input_tokens=?, output_tokens=? WHERE remote_id=?",
            (status, last_seq, time.time(), tokens.input, tokens.cached_input, tokens.output, remote_id),
        )

    async def token_rows(self, conversation: str | None = None) -> list[TokenRow]:
        sql = ("SELECT t.conversation, r.turn_id, r.agent, COUNT(*) AS runs, SUM(r.input_tokens) AS i,"
               " SUM(r.cached_input_tokens) AS c, SUM(r.output_tokens) AS o, MIN(t.created_at) AS at"
               " FROM runs r JOIN turns t ON t.id = r.turn_id")
        params: list[Any] = []
        if conversation is not None:
            sql += " WHERE t.conversation=?"
            params.append(conversation)
        rows = await self._rows(sql + " GROUP BY r.turn_id, r.agent ORDER BY at, r.turn_id, MIN(r.created_at)", params)
        return [TokenRow(r["conversation"], r["turn_id"], r["agent"], int(r["runs"]),
                         RunTokens(int(r["i"]), int(r["c"]), int(r["o"]))) for r in rows]

    async def latest_run(self, turn_id: str, scope: str) -> RunRecord | None:
        row = await self._row(
            "SELECT * FROM runs WHERE turn_id=? AND scope=? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (turn_id, scope),
        )
        return _run(row) if row else None

    async def active_runs(self, turn_id: str | None = None) -> list[RunRecord]:
        # the statuses spelled out, not bound: so the partial index runs_active (schema version 4) applies
        sql = f"SELECT * FROM runs WHERE status NOT IN ({', '.join(repr(s) for s in TERMINAL_RUN_STATUSES)})"
        if turn_id is None:
            return [_run(r) for r in await self._rows(sql)]
        return [_run(r) for r in await self._rows(sql + " AND turn_id=?", (turn_id,))]

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        await self._write(
            "INSERT OR IGNORE INTO tool_calls(turn_id, scope, call_id, name, arguments) VALUES (?,?,?,?,?)",
            (call.turn_id, call.scope, call.call_id, call.name, call.arguments),
        )

    async def finish_tool_call(self, turn_id: str, scope: str, call_id: str, output: str, ok: bool) -> None:
        await self._write(
            "UPDATE tool_calls SET output=?, ok=? WHERE turn_id=? AND scope=? AND call_id=?",
            (output, int(ok), turn_id, scope, call_id),
        )

    async def get_tool_call(self, turn_id: str, scope: str, call_id: str) -> ToolCallRecord | None:
        row = await self._row(
            "SELECT * FROM tool_calls WHERE turn_id=? AND scope=? AND call_id=?", (turn_id, scope, call_id)
        )
        if row is None:
            return None
        return ToolCallRecord(
            turn_id=row["turn_id"],
            scope=row["scope"],
            call_id=row["call_id"],
            name=row["name"],
            arguments=row["arguments"],
            output=row["output"],
            ok=None if row["ok"] is None else bool(row["ok"]),
        )

    # ---- threads and transcript ----

    async def get_conversation(self, key: str) -> ConversationRecord | None:
        row = await self._row("SELECT * FROM conversations WHERE key=?", (key,))
        return _conversation(row) if row else None

    async def set_main_thread(self, key: str, generation: int, thread_id: str | None) -> None:
        await self._write(
            "UPDATE conversations SET main_thread=? WHERE key=? AND generation=?", (thread_id, key, generation)
        )

    async def get_sub_thread(self, key: str, generation: int, path: str) -> str | None:
        row = await self._row(
            "SELECT thread_id FROM sub_threads WHERE conversation=? AND generation=? AND path=?",
            (key, generation, path),
        )
        return str(row["thread_id"]) if row else None

    async def set_sub_thread(self, key: str, generation: int, path: str, thread_id: str) -> None:
        await self._write(
            "INSERT OR REPLACE INTO sub_threads(conversation, generation, path, thread_id) VALUES (?,?,?,?)",
            (key, generation, path, thread_id),
        )

    async def bump_generation(self, key: str) -> int:
        await self._write("UPDATE conversations SET generation=generation+1, main_thread=NULL WHERE key=?", (key,))
        row = await self._row("SELECT generation FROM conversations WHERE key=?", (key,))
        return int(row["generation"]) if row else 0

    async def append_transcript(self, key: str, generation: int, thread_path: str, entry: TranscriptEntry) -> None:
        await self._write(
            "INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (key, generation, thread_path, entry.role, entry.text, entry.turn_id, time.time()),
        )

    async def transcript(self, key: str, generation: int, thread_path: str) -> list[TranscriptEntry]:
        rows = await self._rows(
            "SELECT role, text, turn_id FROM transcript WHERE conversation=? AND generation=? AND thread_path=?"
            " AND reset=0 ORDER BY id",
            (key, generation, thread_path),
        )
        return [TranscriptEntry(role=r["role"], text=r["text"], turn_id=r["turn_id"]) for r in rows]

    async def mark_transcript_reset(self, key: str, generation: int) -> None:
        await self._write("UPDATE transcript SET reset=1 WHERE conversation=? AND generation=?", (key, generation))

    async def get_agent(self, backend: str, name: str) -> tuple[str, str] | None:
        row = await self._row("SELECT remote_id, content_hash FROM agents WHERE backend=? AND name=?", (backend, name))
        return (str(row["remote_id"]), str(row["content_hash"])) if row else None

    async def set_agent(self, backend: str, name: str, remote_id: str, content_hash: str) -> None:
        await self._write(
            "INSERT OR REPLACE INTO agents(backend, name, remote_id, content_hash) VALUES (?,?,?,?)",
            (backend, name, remote_id, content_hash),
        )

    # ---- chat threads ----

    async def create_chat_thread(self, thread_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        now = time.time()
        statements: Statements = [("INSERT INTO chat_threads(thread_id, created_at) VALUES (?,?)", (thread_id, now))]
        statements += [
            ("INSERT INTO chat_messages(thread_id, message, created_at) VALUES (?,?,?)", (thread_id, _dumps(m), now))
            for m in messages
        ]
        await self._transaction(statements)

    async def chat_thread(self, thread_id: str) -> ChatThread | None:
        if await self._row("SELECT 1 FROM chat_threads WHERE thread_id=?", (thread_id,)) is None:
            return None
        summary = await self._row(
            "SELECT upto_id, text FROM chat_summaries WHERE thread_id=? ORDER BY upto_id DESC LIMIT 1", (thread_id,)
        )
        upto = int(summary["upto_id"]) if summary else 0
        rows = await self._rows(
            "SELECT id, message FROM chat_messages WHERE thread_id=? AND id>? ORDER BY id", (thread_id, upto)
        )
        messages = [ChatMessage(int(r["id"]), json.loads(r["message"])) for r in rows]
        return ChatThread(str(summary["text"]) if summary else None, upto, messages)

    async def delete_chat_thread(self, thread_id: str) -> None:
        await self._transaction([
            (f"DELETE FROM {table} WHERE thread_id=?", (thread_id,))
            for table in CHAT_THREAD_TABLES
        ])

    async def finish_chat_run(
        self, run_id: str, thread_id: str, messages: Sequence[Mapping[str, Any]], state: Mapping[str, Any]
    ) -> bool:
        if await self._row("SELECT 1 FROM chat_runs WHERE run_id=?", (run_id,)) is not None:
            return False  # a run id belongs to one stream, so nobody else writes it between this read and the write
        now = time.time()
        statements: Statements = [(
            "INSERT INTO chat_runs(run_id, thread_id, state, created_at) VALUES (?,?,?,?)",
            (run_id, thread_id, _dumps(state), now),
        )]
        statements += [
            ("INSERT INTO chat_messages(thread_id, run_id, message, created_at) VALUES (?,?,?,?)",
             (thread_id, run_id, _dumps(m), now))
            for m in messages
        ]
        await self._transaction(statements)
        return True

    async def chat_run(self, run_id: str) -> dict[str, Any] | None:
        row = await self._row("SELECT state FROM chat_runs WHERE run_id=?", (run_id,))
        return dict(json.loads(row["state"])) if row else None

    async def add_chat_summary(self, thread_id: str, upto_id: int, text: str) -> None:
        await self._write(
            "INSERT OR REPLACE INTO chat_summaries(thread_id, upto_id, text, created_at) VALUES (?,?,?,?)",
            (thread_id, upto_id, text, time.time()),
        )

    async def thread_provider(self, thread_id: str) -> str | None:
        row = await self._row("SELECT provider FROM thread_providers WHERE thread_id=?", (thread_id,))
        return str(row["provider"]) if row else None

    async def set_thread_provider(self, thread_id: str, provider: str) -> None:
        await self._write(
            "INSERT OR REPLACE INTO thread_providers(thread_id, provider) VALUES (?,?)", (thread_id, provider)
        )

    # ---- response chains ----

    async def create_chain(self, thread_id: str) -> None:
        created = await self._write(
            "INSERT OR IGNORE INTO response_chains(thread_id, updated_at) VALUES (?,?)", (thread_id, time.time())
        )
        if created != 1:
            raise StoreError(f"response chain {thread_id} already exists")

    async def chain(self, thread_id: str) -> ChainRecord | None:
        row = await self._row("SELECT head, cancelled FROM response_chains WHERE thread_id=?", (thread_id,))
        return ChainRecord(thread_id, row["head"], tuple(json.loads(row["cancelled"]))) if row else None

    async def advance_chain(self, thread_id: str, previous: str | None, head: str) -> bool:
        # one statement: the head moves if it is `previous`; a head that already is `head` is kept as it is
        moved = await self._write(
            "UPDATE response_chains SET head=?, cancelled=CASE WHEN head IS ? THEN '[]' ELSE cancelled END,"
            " updated_at=CASE WHEN head IS ? THEN ? ELSE updated_at END WHERE thread_id=? AND (head IS ? OR head=?)",
            (head, previous, previous, time.time(), thread_id, previous, head),
        )
        return moved == 1

    async def cancel_chain_calls(self, thread_id: str, call_ids: Sequence[str]) -> None:
        if not call_ids:
            return
        try:
            await self._opened.run(_cancel_chain_calls, thread_id, list(call_ids), time.time())
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}); check that {self.path} is writable and not full") from exc

    async def delete_chain(self, thread_id: str) -> None:
        await self._write("DELETE FROM response_chains WHERE thread_id=?", (thread_id,))

    # ---- admin and audit ----

    async def conversations(self, channel: str | None = None) -> list[ConversationRecord]:
        if channel is None:
            rows = await self._rows("SELECT * FROM conversations ORDER BY created_at")
        else:
            rows = await self._rows("SELECT * FROM conversations WHERE channel=? ORDER BY created_at", (channel,))
        return [_conversation(r) for r in rows]

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._write(
            "INSERT INTO audit(at, platform, actor, action, target, outcome, detail) VALUES (?,?,?,?,?,?,?)",
            (entry.at, entry.platform, entry.actor, entry.action, entry.target, entry.outcome, entry.detail),
        )

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        rows = await self._rows("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [
            AuditEntry(
                at=r["at"],
                platform=r["platform"],
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                outcome=r["outcome"],
                detail=r["detail"],
            )
            for r in rows
        ]

    # ---- retention ----

    async def prune(self, policy: RetentionPolicy, now: float | None = None) -> PruneCounts:
        counts: dict[str, int] = {}
        for step in prune_steps(policy, now):
            while True:
                deleted = await self._write(step.sql, step.params)
                counts[step.field] = counts.get(step.field, 0) + deleted
                if deleted < BATCH:
                    break
        return PruneCounts(**counts)


    # ---- rate limits, usage and deletion ----

    async def admit_inbound(self, message: InboxMessage, quotas: Mapping[str, int], minute: int) -> str:
        try:
            return await self._opened.run(_admit, message, dict(quotas), minute)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}); check that {self.path} is writable and not full") from exc

    async def add_usage(self, day: str, buckets: Sequence[str], *, input_tokens: int = 0, output_tokens: int = 0,
                        cost: float = 0.0, granted_tokens: int = 0, granted_cost: float = 0.0,
                        cached_input_tokens: int = 0) -> None:
        amounts = (input_tokens, output_tokens, cost, granted_tokens, granted_cost, cached_input_tokens)
        await self._transaction([
            (
                "INSERT INTO usage(day, bucket, input_tokens, output_tokens, cost, granted_tokens, granted_cost,"
                " cached_input_tokens) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(day, bucket) DO UPDATE SET"
                " input_tokens=input_tokens+excluded.input_tokens, output_tokens=output_tokens+excluded.output_tokens,"
                " cost=cost+excluded.cost, granted_tokens=granted_tokens+excluded.granted_tokens,"
                " granted_cost=granted_cost+excluded.granted_cost,"
                " cached_input_tokens=cached_input_tokens+excluded.cached_input_tokens",
                (day, bucket, *amounts),
            )
            for bucket in dict.fromkeys(buckets)
        ])

    async def usage_on(self, day: str, buckets: Sequence[str] | None = None) -> list[UsageRow]:
        sql, params = "SELECT * FROM usage WHERE day=?", [day]
        if buckets is not None:
            sql += f" AND bucket IN ({','.join('?' * len(buckets))})"
            params += list(buckets)
        rows = await self._rows(sql + " ORDER BY bucket", params)
        return [
            UsageRow(r["day"], r["bucket"], int(r["input_tokens"]), int(r["output_tokens"]), float(r["cost"]),
                     int(r["granted_tokens"]), float(r["granted_cost"]), int(r["cached_input_tokens"]))
            for r in rows
        ]

    async def forget_user(self, user: str, platform: str | None = None, dry_run: bool = False) -> ForgetReport:
        try:
            report = await self._opened.run(_forget, user, platform, dry_run)
            if not dry_run:  # the WAL still holds the old pages until a checkpoint copies the overwritten ones back
                await self._opened.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}); check that {self.path} is writable and not full") from exc
        return report


def _admit(conn: sqlite3.Connection, message: InboxMessage, quotas: dict[str, int], minute: int) -> str:
    if conn.execute("SELECT 1 FROM inbox WHERE event_id=?", (message.event_id,)).fetchone():
        return "duplicate"
    for bucket, limit in quotas.items():
        row = conn.execute("SELECT count FROM rate_counters WHERE bucket=? AND minute=?", (bucket, minute)).fetchone()
        if row is not None and row[0] >= limit:
            return bucket
    conn.execute("DELETE FROM rate_counters WHERE minute < ?", (minute - 1,))
    for bucket in quotas:
        conn.execute(
            "INSERT INTO rate_counters(bucket, minute, count) VALUES (?,?,1)"
            " ON CONFLICT(bucket, minute) DO UPDATE SET count=count+1",
            (bucket, minute),
        )
    conn.execute(
        "INSERT OR IGNORE INTO conversations(key, platform, channel, started_by, created_at) VALUES (?,?,?,?,?)",
        (message.conversation, message.platform, message.channel, message.user, message.received_at),
    )
    conn.execute(
        "INSERT INTO inbox(event_id, conversation, platform, channel, user_id, text, route, state, received_at, seq)"
        " VALUES (?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox))",
        (message.event_id, message.conversation, message.platform, message.channel, message.user, message.text,
         _dumps(dict(message.route)), message.state, message.received_at),
    )
    return ""


def _cancel_chain_calls(conn: sqlite3.Connection, thread_id: str, call_ids: list[str], now: float) -> None:
    row = conn.execute("SELECT cancelled FROM response_chains WHERE thread_id=?", (thread_id,)).fetchone()
    if row is not None:
        merged = list(dict.fromkeys([*json.loads(row["cancelled"]), *call_ids]))
        conn.execute("UPDATE response_chains SET cancelled=?, updated_at=? WHERE thread_id=?",
                     (_dumps(merged), now, thread_id))


def _forget(conn: sqlite3.Connection, user: str, platform: str | None, dry_run: bool) -> ForgetReport:
    conn.execute("SAVEPOINT forget")
    who, who_params = ("user_id=?", [user]) if platform is None else ("user_id=? AND platform=?", [user, platform])
    mine = conn.execute(f"SELECT conversation, turn_id, text FROM inbox WHERE {who}", who_params).fetchall()
    turns = sorted({r["turn_id"] for r in mine if r["turn_id"]})
    started = "started_by=?" + ("" if platform is None else " AND platform=?")
    convs = sorted({r["conversation"] for r in mine} | {
        r["key"] for r in conn.execute(f"SELECT key FROM conversations WHERE {started}", who_params)
    })
    threads: set[str] = set()
    for key in convs:
        threads.update(r[0] for r in conn.execute(
            "SELECT main_thread FROM conversations WHERE key=? AND main_thread IS NOT NULL", (key,)))
        threads.update(r[0] for r in conn.execute("SELECT thread_id FROM sub_threads WHERE conversation=?", (key,)))
        conn.execute("UPDATE conversations SET main_thread=NULL WHERE key=?", (key,))
        conn.execute("DELETE FROM sub_threads WHERE conversation=?", (key,))
        for r in mine:  # entries the user wrote that no turn claims (a migration's copies, a crash before claiming)
            if r["conversation"] == key:
                conn.execute("DELETE FROM transcript WHERE conversation=? AND role='user' AND text=?", (key, r["text"]))
    runs: set[tuple[str, str]] = set()
    for turn in turns:
        runs.update((r[0], r[1]) for r in conn.execute("SELECT remote_id, thread_id FROM runs WHERE turn_id=?",
                                                          (turn,)))
        threads.update(thread for _, thread in runs)
        for table, column in (("transcript", "turn_id"), ("runs", "turn_id"), ("tool_calls", "turn_id"),
                              ("turns", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column}=?", (turn,))
        conn.execute(  # others' messages in that turn: answered anew unless the answer was delivered
            "UPDATE inbox SET turn_id=NULL, state=CASE WHEN state='in_turn' THEN 'pending' ELSE state END"
            " WHERE turn_id=?",
            (turn,),
        )
    for thread in threads:  # threads the chat backend keeps here: in this transaction, so before the checkpoint
        for table in CHAT_THREAD_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE thread_id=?", (thread,))
    for key in convs:  # handoffs: the conversation starts afresh at the entry (its notes and state quote the user)
        for table in HANDOFF_CONVERSATION_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE conversation=?", (key,))
    deleted = conn.execute(f"DELETE FROM inbox WHERE {who}", who_params).rowcount
    conn.execute(f"UPDATE conversations SET started_by='' WHERE {started}", who_params)
    conn.execute("ROLLBACK TO forget" if dry_run else "RELEASE forget")
    return ForgetReport(messages=deleted, turns=len(turns), conversations=tuple(convs), threads=tuple(sorted(threads)),
                        runs=tuple(sorted(runs)))


def _missing_folder(path: str) -> str | None:
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    return None if os.path.isdir(parent) else parent


def _conversation(row: sqlite3.Row) -> ConversationRecord:
    return ConversationRecord(
        key=row["key"],
        platform=row["platform"],
        channel=row["channel"],
        started_by=row["started_by"],
        generation=int(row["generation"]),
        main_thread=row["main_thread"],
        created_at=row["created_at"],
    )


def _inbox(row: sqlite3.Row) -> InboxMessage:
    return InboxMessage(
        event_id=row["event_id"],
        conversation=row["conversation"],
        platform=row["platform"],
        channel=row["channel"],
        user=row["user_id"],
        text=row["text"],
        route=json.loads(row["route"]),
        received_at=row["received_at"],
        state=row["state"],
        turn_id=row["turn_id"],
    )


def _turn(row: sqlite3.Row) -> TurnRecord:
    return TurnRecord(
        id=row["id"],
        conversation=row["conversation"],
        generation=int(row["generation"]),
        state=row["state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        reply_kind=row["reply_kind"],
        reply_text=row["reply_text"],
        delivered_ref=row["delivered_ref"],
        retries=int(row["retries"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
    )


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        remote_id=row["remote_id"],
        turn_id=row["turn_id"],
        scope=row["scope"],
        agent=row["agent"],
        thread_id=row["thread_id"],
        status=row["status"],
        attempt=int(row["attempt"]),
        input=json.loads(row["input"]),
        last_seq=row["last_seq"],
        created_at=row["created_at"],
    )
