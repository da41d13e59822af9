"""The PostgreSQL `Store`: the contract of `storage.base` on a server several Switchboard instances share. Each
operation is one statement or one transaction on a pooled connection, shielded from its caller's cancel.

Driver: asyncpg and its own pool. It speaks PostgreSQL's binary protocol natively (no libpq to install), prepares
and caches every statement per connection, and is the fastest asyncio driver measured (docs/PERFORMANCE.md); psycopg 3
would need its separate pool package and libpq. A caller cancelled mid-operation only stops waiting: the operation
runs on as its own task, and the next operation waits for such orphans first, so, as with SQLite, an operation lands
whole or not at all and a read sees every write called before it. With `owner` set (several instances), every write
of a turn is one statement whose first part holds the conversation's lease row and checks that this instance still
has it under the token it was granted (`storage.leases`); otherwise nothing is written and `LeaseLost` is raised: a
fencing token, so an instance that lost its lease (paused, cut off) can never write over the new owner's work. One
statement, not a transaction: each round trip costs a turn of a busy event loop (docs/PERFORMANCE.md). PostgreSQL
text cannot hold NUL, so NUL characters in stored text become U+FFFD. Over 450 lines because it is the whole
contract in one dialect, method for method beside `storage.sqlite`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from storage.base import (
    UNFINISHED_TURN_STATES,
    AuditEntry,
    ChainRecord,
    ChatMessage,
    ChatThread,
    ConversationRecord,
    ForgetReport,
    InboxMessage,
    LeaseLost,
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
from storage.handoffs import PostgresHandoffs
from storage.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION
from storage.retention import BATCH, postgres_sql, prune_steps
from storage.select import redacted

T = TypeVar("T")
log = logging.getLogger("switchboard.storage")
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 10.0
MIGRATION_LOCK = 0x5377_6264  # advisory lock id: instances starting together migrate one at a time
INBOX_CHANNEL = "switchboard_inbox"  # NOTIFY channel: a message was stored for this conversation
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)
#: The tables that hold a chat-backend thread (its provider choice, `thread_providers`, holds no text and stays).
CHAT_THREAD_TABLES = ("chat_threads", "chat_messages", "chat_summaries", "chat_runs")
#: What `forget_user` deletes from: VACUUMed after it, so the deleted rows' space is reused, not kept as dead rows.
#: Handoff rows of a conversation (issue 14), deleted with it by `forget_user`.
HANDOFF_CONVERSATION_TABLES = ("handoff_state", "handoffs", "turn_agents")
FORGET_TABLES = ("inbox", "turns", "runs", "tool_calls", "transcript", "sub_threads", "conversations",
                 *CHAT_THREAD_TABLES, *HANDOFF_CONVERSATION_TABLES)


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _opt_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class PostgresStore(PostgresHandoffs):
    """`Store` on a PostgreSQL database named by a `postgresql://` URL. `owner`: this instance's id, to fence writes
    with conversation leases (None: one instance, no leases)."""

    schema_version = PG_SCHEMA_VERSION

    def __init__(self, url: str, *, owner: str | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.path = redacted(url)  # what errors and logs name
        self.owner = owner
        self.pool_size = pool_size
        self.tokens: dict[str, int] = {}  # conversation -> fencing token of the lease this instance holds
        self._pool: asyncpg.Pool | None = None
        self._orphans: set[asyncio.Task[Any]] = set()
        self._turn_conversations: dict[str, str] = {}  # unfinished turns' conversations, to fence their writes
        self._thread_conversations: dict[str, str] = {}  # chat threads' conversations, likewise

    # ---- lifecycle ----

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                             timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=None)
        except (*DB_ERRORS, ValueError) as exc:
            raise StoreError(f"cannot open database {self.path}: {_reason(exc)}") from exc
        try:
            async with pool.acquire() as conn:
                await _migrate(conn, self.path)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, DB_ERRORS):
                raise StoreError(f"cannot migrate database {self.path}: {_reason(exc)}") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._orphans:
            await asyncio.gather(*self._orphans, return_exceptions=True)
        await pool.close()

    async def writable(self) -> bool:
        try:
            row = await self._fetchrow("SELECT pg_is_in_recovery() AS standby,"
                                       " current_setting('transaction_read_only') AS ro")
        except StoreError:
            return False
        return row is not None and not row["standby"] and row["ro"] == "off"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def _op(self, fn: Callable[[Connection], Awaitable[T]], what: str = "write") -> T:
        """Run fn on a pooled connection as its own task; the caller's cancel stops only the wait."""
        pool = self.pool
        if self._orphans:
            await asyncio.gather(*list(self._orphans), return_exceptions=True)

        async def run() -> T:
            try:
                async with pool.acquire() as conn:
                    return await fn(conn)
            except StoreError:
                raise
            except DB_ERRORS as exc:
                raise StoreError(f"database {what} failed ({_reason(exc)}) on {self.path}") from exc

        task = asyncio.ensure_future(run())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._orphans.add(task)
                task.add_done_callback(self._orphan_done)
            raise

    def _orphan_done(self, task: asyncio.Task[Any]) -> None:
        self._orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "a database operation whose caller was cancelled failed: %s", task.exception())

    async def _execute(self, sql: str, *args: Any) -> str:
        async def run(conn: Connection) -> str:
            return str(await conn.execute(sql, *args))

        return await self._op(run)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run(conn: Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(sql, *args))

        return await self._op(run, "read")

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    # ---- fencing: every write of a turn is one statement whose CTE `fence` holds the lease row (FOR SHARE, so a
    # takeover waits for it), and whose writes happen only if the row says this instance, under its token ----

    def _fence(self, conversation: str | None) -> tuple[str, tuple[Any, ...]]:
        """The `fence` CTE and its parameters $1-$3 (conversation, owner, token). Unfenced (one instance, or a
        turn this store has no record of): a fence that always holds."""
        if self.owner is None or conversation is None:
            return "fence AS (SELECT $1::text AS c, $2::text AS o, $3::bigint AS t)", (conversation, "", 0)
        return ("fence AS (SELECT conversation FROM leases WHERE conversation=$1 AND owner=$2 AND token=$3"
                " FOR SHARE)", (conversation, self.owner, self.tokens.get(conversation, -1)))

    async def _fenced(self, conversation: str | None, cte: str, args: Sequence[Any]) -> int:
        """Run `WITH fence, <cte> SELECT ...` (the CTE's own parameters from $4; its last part is named `w` and
        RETURNs one row per row written); the rows written. LeaseLost, with nothing written, if the fence fails."""
        fence, fence_args = self._fence(conversation)
        sql = f"WITH {fence}, {cte} SELECT (SELECT count(*) FROM fence) AS fenced, (SELECT count(*) FROM w) AS n"

        async def run(conn: Connection) -> asyncpg.Record:
            row = await conn.fetchrow(sql, *fence_args, *args)
            assert row is not None
            return row

        row = await self._op(run)
        if not row["fenced"]:
            raise LeaseLost(f"this instance no longer owns conversation {conversation}")
        return int(row["n"])

    async def _conversation_of(self, turn_id: str) -> str | None:
        """The turn's conversation (to fence its writes), or None for a turn not recorded."""
        if self.owner is None:
            return None
        known = self._turn_conversations.get(turn_id)
        if known is None:
            row = await self._fetchrow("SELECT conversation FROM turns WHERE id=$1", turn_id)
            if row is None:
                return None
            known = self._turn_conversations[turn_id] = str(row["conversation"])
        return known

    def _remember(self, turns: Sequence[TurnRecord]) -> list[TurnRecord]:
        if self.owner is not None:
            for turn in turns:
                if turn.state != "delivered":
                    self._turn_conversations[turn.id] = turn.conversation
        return list(turns)

    # ---- inbox ----

    async def add_inbound(self, message: InboxMessage) -> bool:
        row = await self._fetchrow(
            "WITH c AS (INSERT INTO conversations(key, platform, channel, started_by, created_at)"
            " VALUES ($2,$3,$4,$5,$9) ON CONFLICT DO NOTHING),"
            " i AS (INSERT INTO inbox(event_id, conversation, platform, channel, user_id, text, route, state,"
            " received_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING RETURNING conversation)"
            f" SELECT pg_notify('{INBOX_CHANNEL}', conversation) AS n FROM i",
            message.event_id, message.conversation, message.platform, message.channel, _text(message.user),
            _text(message.text), _dumps(dict(message.route)), message.state, message.received_at,
        )
        return row is not None

    async def pending_inbound(self, conversation: str) -> list[InboxMessage]:
        rows = await self._fetch(
            "SELECT * FROM inbox WHERE conversation=$1 AND state='pending' ORDER BY seq", conversation)
        return [_inbox(r) for r in rows]

    async def conversations_with_pending(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT conversation FROM inbox WHERE state='pending'")
        return [str(r["conversation"]) for r in rows]

    async def claim_inbound(self, event_ids: list[str], turn_id: str) -> None:
        await self._execute(
            "UPDATE inbox SET state='in_turn', turn_id=$1 WHERE event_id = ANY($2::text[]) AND state='pending'",
            turn_id, list(event_ids))

    async def inbound_for_turn(self, turn_id: str) -> list[InboxMessage]:
        rows = await self._fetch("SELECT * FROM inbox WHERE turn_id=$1 ORDER BY seq", turn_id)
        return [_inbox(r) for r in rows]

    # ---- turns and runs ----

    async def start_turn(self, turn: TurnRecord, messages: list[InboxMessage], thread_path: str) -> None:
        self._remember([turn])
        await self._insert_turn(
            "t AS (INSERT INTO turns(id, conversation, generation, state, created_at, updated_at)"
            " SELECT $4, $1, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM fence) RETURNING id),"
            " c AS (UPDATE inbox SET state='in_turn', turn_id=$4 WHERE event_id = ANY($9::text[]) AND state='pending'"
            "  AND EXISTS (SELECT 1 FROM t)),"
            " w AS (INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
            "  SELECT $1, $5, $10, 'user', u.text, $4, $7 FROM unnest($11::text[]) WITH ORDINALITY AS u(text, n)"
            "  WHERE EXISTS (SELECT 1 FROM t) ORDER BY u.n RETURNING 1)",
            turn, (turn.id, turn.generation, turn.state, turn.created_at, turn.updated_at,
                   [m.event_id for m in messages], thread_path, [_text(m.text) for m in messages]))

    async def create_turn(self, turn: TurnRecord, claim: Sequence[str] = ()) -> None:
        self._remember([turn])
        await self._insert_turn(
            "w AS (INSERT INTO turns(id, conversation, generation, state, reply_kind, reply_text, created_at,"
            " updated_at) SELECT $4, $1, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM fence) RETURNING id),"
            " c AS (UPDATE inbox SET state='in_turn', turn_id=$4 WHERE event_id = ANY($11::text[]) AND state='pending'"
            "  AND EXISTS (SELECT 1 FROM w))",
            turn, (turn.id, turn.generation, turn.state, turn.reply_kind, _opt_text(turn.reply_text),
                   turn.created_at, turn.updated_at, list(claim)))

    async def _insert_turn(self, cte: str, turn: TurnRecord, args: Sequence[Any]) -> None:
        try:
            await self._fenced(turn.conversation, cte, args)
        except LeaseLost:
            raise
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise StoreError(f"turn {turn.id} already exists") from exc.__cause__
            raise

    async def record_reply(self, turn: TurnRecord, update: TurnUpdate, thread_path: str) -> None:
        sets, params = _turn_update_sql(update, first=11)
        answer = update.reply_kind == "answer" and update.reply_text is not None
        conversation = await self._conversation_of(turn.id)
        await self._fenced(
            conversation if conversation is not None else (turn.conversation if self.owner else None),
            f"u AS (UPDATE turns SET {sets} WHERE id=$4 AND EXISTS (SELECT 1 FROM fence)),"
            " w AS (INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
            "  SELECT $5, $6, $7, 'assistant', $8, $4, $9 WHERE $10::boolean AND EXISTS (SELECT 1 FROM fence)"
            "  RETURNING 1)",
            (turn.id, turn.conversation, turn.generation, thread_path, _text(update.reply_text or ""), time.time(),
             answer, *params))

    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        sets, params = _turn_update_sql(TurnUpdate(state="delivered", delivered_ref=delivered_ref), first=6)
        await self._fenced(
            await self._conversation_of(turn_id),
            f"u AS (UPDATE turns SET {sets} WHERE id=$4 AND EXISTS (SELECT 1 FROM fence)),"
            " w AS (UPDATE inbox SET state='answered' WHERE event_id = ANY($5::text[])"
            "  AND EXISTS (SELECT 1 FROM fence) RETURNING 1)",
            (turn_id, list(event_ids), *params))
        self._turn_conversations.pop(turn_id, None)

    async def update_turn(self, turn_id: str, update: TurnUpdate) -> None:
        sets, params = _turn_update_sql(update, first=5)
        written = await self._fenced(
            await self._conversation_of(turn_id),
            f"w AS (UPDATE turns SET {sets} WHERE id=$4 AND EXISTS (SELECT 1 FROM fence) RETURNING 1)",
            (turn_id, *params))
        if written != 1:
            raise StoreError(f"turn {turn_id} does not exist")

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        row = await self._fetchrow("SELECT * FROM turns WHERE id=$1", turn_id)
        return self._remember([_turn(row)])[0] if row else None

    async def unfinished_turns(self, conversation: str | None = None) -> list[TurnRecord]:
        states = list(UNFINISHED_TURN_STATES)
        if conversation is None:
            rows = await self._fetch(
                "SELECT * FROM turns WHERE state = ANY($1::text[]) AND state <> 'delivered' ORDER BY created_at",
                states)
        else:
            rows = await self._fetch(
                "SELECT * FROM turns WHERE state = ANY($1::text[]) AND state <> 'delivered' AND conversation=$2"
                " ORDER BY created_at", states, conversation)
        return self._remember([_turn(r) for r in rows])

    async def record_run(self, run: RunRecord) -> None:
        now = time.time()
        await self._fenced(
            await self._conversation_of(run.turn_id),
            "w AS (INSERT INTO runs(remote_id, turn_id, scope, agent, thread_id, status, attempt, last_seq, input,"
            " created_at, updated_at) SELECT $4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14 WHERE EXISTS (SELECT 1 FROM fence)"
            " ON CONFLICT (remote_id) DO UPDATE SET turn_id=EXCLUDED.turn_id, scope=EXCLUDED.scope,"
            " agent=EXCLUDED.agent, thread_id=EXCLUDED.thread_id, status=EXCLUDED.status,"
            " attempt=EXCLUDED.attempt, last_seq=EXCLUDED.last_seq, input=EXCLUDED.input,"
            " created_at=EXCLUDED.created_at, updated_at=EXCLUDED.updated_at, recorded=nextval('runs_order')"
            " RETURNING 1)",
            (run.remote_id, run.turn_id, run.scope, run.agent, run.thread_id, run.status, run.attempt,
             run.last_seq, _dumps(run.input), run.created_at or now, now))

    async def update_run(self, remote_id: str, *, status: str, last_seq: int | None = None,
                         tokens: RunTokens | None = None) -> None:
        if tokens is None:
            await self._execute(
                "UPDATE runs SET status=$1, last_seq=COALESCE($2, last_seq), updated_at=$3 WHERE remote_id=$4",
                status, last_seq, time.time(), remote_id)
            return
        await self._execute(
            "UPDATE runs SET status=$1, last_seq=COALESCE($2, last_seq), updated_at=$3, input_tokens=$5,"
            " cached_input_tokens=$6, output_tokens=$7 WHERE remote_id=$4",
            status, last_seq, time.time(), remote_id, tokens.input, tokens.cached_input, tokens.output)

    async def token_rows(self, conversation: str | None = None) -> list[TokenRow]:
        sql = ("SELECT t.conversation, r.turn_id, r.agent, COUNT(*) AS runs, SUM(r.input_tokens) AS i,"
               " SUM(r.cached_input_tokens) AS c, SUM(r.output_tokens) AS o, MIN(t.created_at) AS at"
               " FROM runs r JOIN turns t ON t.id = r.turn_id")
        group = " GROUP BY t.conversation, r.turn_id, r.agent ORDER BY at, r.turn_id, MIN(r.created_at)"
        rows = await (self._fetch(sql + group) if conversation is None
                      else self._fetch(sql + " WHERE t.conversation=$1" + group, conversation))
        return [TokenRow(r["conversation"], r["turn_id"], r["agent"], int(r["runs"]),
                         RunTokens(int(r["i"]), int(r["c"]), int(r["o"]))) for r in rows]

    async def latest_run(self, turn_id: str, scope: str) -> RunRecord | None:
        row = await self._fetchrow(
            "SELECT * FROM runs WHERE turn_id=$1 AND scope=$2 ORDER BY created_at DESC, recorded DESC LIMIT 1",
            turn_id, scope)
        return _run(row) if row else None

    async def active_runs(self, turn_id: str | None = None) -> list[RunRecord]:
        # the literal list matches the partial index runs_active
        sql = "SELECT * FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled', 'expired', 'incomplete',"
        sql += " 'superseded')"
        rows = await (self._fetch(sql) if turn_id is None else self._fetch(sql + " AND turn_id=$1", turn_id))
        return [_run(r) for r in rows]

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        await self._fenced(
            await self._conversation_of(call.turn_id),
            "w AS (INSERT INTO tool_calls(turn_id, scope, call_id, name, arguments) SELECT $4,$5,$6,$7,$8"
            " WHERE EXISTS (SELECT 1 FROM fence) ON CONFLICT DO NOTHING RETURNING 1)",
            (call.turn_id, call.scope, call.call_id, call.name, _text(call.arguments)))

    async def finish_tool_call(self, turn_id: str, scope: str, call_id: str, output: str, ok: bool) -> None:
        await self._fenced(
            await self._conversation_of(turn_id),
            "w AS (UPDATE tool_calls SET output=$4, ok=$5 WHERE turn_id=$6 AND scope=$7 AND call_id=$8"
            " AND EXISTS (SELECT 1 FROM fence) RETURNING 1)",
            (_text(output), ok, turn_id, scope, call_id))

    async def get_tool_call(self, turn_id: str, scope: str, call_id: str) -> ToolCallRecord | None:
        row = await self._fetchrow(
            "SELECT * FROM tool_calls WHERE turn_id=$1 AND scope=$2 AND call_id=$3", turn_id, scope, call_id)
        if row is None:
            return None
        return ToolCallRecord(turn_id=row["turn_id"], scope=row["scope"], call_id=row["call_id"], name=row["name"],
                              arguments=row["arguments"], output=row["output"], ok=row["ok"])

    # ---- threads and transcript ----

    async def get_conversation(self, key: str) -> ConversationRecord | None:
        row = await self._fetchrow("SELECT * FROM conversations WHERE key=$1", key)
        return _conversation(row) if row else None

    async def set_main_thread(self, key: str, generation: int, thread_id: str | None) -> None:
        await self._execute(
            "UPDATE conversations SET main_thread=$1 WHERE key=$2 AND generation=$3", thread_id, key, generation)

    async def get_sub_thread(self, key: str, generation: int, path: str) -> str | None:
        row = await self._fetchrow(
            "SELECT thread_id FROM sub_threads WHERE conversation=$1 AND generation=$2 AND path=$3",
            key, generation, path)
        return str(row["thread_id"]) if row else None

    async def set_sub_thread(self, key: str, generation: int, path: str, thread_id: str) -> None:
        await self._execute(
            "INSERT INTO sub_threads(conversation, generation, path, thread_id) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (conversation, generation, path) DO UPDATE SET thread_id=EXCLUDED.thread_id",
            key, generation, path, thread_id)

    async def bump_generation(self, key: str) -> int:
        row = await self._fetchrow(
            "UPDATE conversations SET generation=generation+1, main_thread=NULL WHERE key=$1 RETURNING generation",
            key)
        return int(row["generation"]) if row else 0

    async def append_transcript(self, key: str, generation: int, thread_path: str, entry: TranscriptEntry) -> None:
        await self._fenced(
            key,
            "w AS (INSERT INTO transcript(conversation, generation, thread_path, role, text, turn_id, created_at)"
            " SELECT $1,$4,$5,$6,$7,$8,$9 WHERE EXISTS (SELECT 1 FROM fence) RETURNING 1)",
            (generation, thread_path, entry.role, _text(entry.text), entry.turn_id, time.time()))

    async def transcript(self, key: str, generation: int, thread_path: str) -> list[TranscriptEntry]:
        rows = await self._fetch(
            "SELECT role, text, turn_id FROM transcript WHERE conversation=$1 AND generation=$2 AND thread_path=$3"
            " AND NOT reset ORDER BY id", key, generation, thread_path)
        return [TranscriptEntry(role=r["role"], text=r["text"], turn_id=r["turn_id"]) for r in rows]

    async def mark_transcript_reset(self, key: str, generation: int) -> None:
        await self._execute(
            "UPDATE transcript SET reset=TRUE WHERE conversation=$1 AND generation=$2 AND NOT reset", key, generation)

    async def get_agent(self, backend: str, name: str) -> tuple[str, str] | None:
        row = await self._fetchrow(
            "SELECT remote_id, content_hash FROM agents WHERE backend=$1 AND name=$2", backend, name)
        return (str(row["remote_id"]), str(row["content_hash"])) if row else None

    async def set_agent(self, backend: str, name: str, remote_id: str, content_hash: str) -> None:
        await self._execute(
            "INSERT INTO agents(backend, name, remote_id, content_hash) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (backend, name) DO UPDATE SET remote_id=EXCLUDED.remote_id,"
            " content_hash=EXCLUDED.content_hash", backend, name, remote_id, content_hash)

    # ---- chat threads: a turn's writes to them (a finished run, a summary) are fenced by the conversation that
    # uses the thread; creating one is not (no conversation refers to it yet), nor is deleting one (admin, migrate) ----

    async def create_chat_thread(self, thread_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        try:
            await self._execute(
                "WITH t AS (INSERT INTO chat_threads(thread_id, created_at) VALUES ($1, $2) RETURNING thread_id)"
                " INSERT INTO chat_messages(thread_id, message, created_at)"
                " SELECT $1, u.m, $2 FROM t, unnest($3::text[]) WITH ORDINALITY AS u(m, n) ORDER BY u.n",
                thread_id, time.time(), [_text(_dumps(m)) for m in messages])
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise StoreError(f"chat thread {thread_id} already exists") from exc.__cause__
            raise

    async def chat_thread(self, thread_id: str) -> ChatThread | None:
        async def run(conn: Connection) -> ChatThread | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await conn.fetchval("SELECT 1 FROM chat_threads WHERE thread_id=$1", thread_id) is None:
                    return None
                summary = await conn.fetchrow(
                    "SELECT upto_id, text FROM chat_summaries WHERE thread_id=$1 ORDER BY upto_id DESC LIMIT 1",
                    thread_id)
                upto = int(summary["upto_id"]) if summary else 0
                rows = await conn.fetch(
                    "SELECT id, message FROM chat_messages WHERE thread_id=$1 AND id>$2 ORDER BY id", thread_id, upto)
            messages = [ChatMessage(int(r["id"]), json.loads(r["message"])) for r in rows]
            return ChatThread(str(summary["text"]) if summary else None, upto, messages)

        return await self._op(run, "read")

    async def delete_chat_thread(self, thread_id: str) -> None:
        async def run(conn: Connection) -> None:
            async with conn.transaction():
                for table in CHAT_THREAD_TABLES:
                    await conn.execute(f"DELETE FROM {table} WHERE thread_id=$1", thread_id)

        await self._op(run)
        self._thread_conversations.pop(thread_id, None)

    async def finish_chat_run(
        self, run_id: str, thread_id: str, messages: Sequence[Mapping[str, Any]], state: Mapping[str, Any]
    ) -> bool:
        inserted = await self._fenced(
            await self._conversation_of_thread(thread_id, run_id),
            "w AS (INSERT INTO chat_runs(run_id, thread_id, state, created_at) SELECT $4, $5, $6, $7"
            " WHERE EXISTS (SELECT 1 FROM fence) ON CONFLICT (run_id) DO NOTHING RETURNING run_id),"
            " m AS (INSERT INTO chat_messages(thread_id, run_id, message, created_at)"
            "  SELECT $5, $4, u.m, $7 FROM w, unnest($8::text[]) WITH ORDINALITY AS u(m, n) ORDER BY u.n)",
            (run_id, thread_id, _dumps(state), time.time(), [_text(_dumps(m)) for m in messages]))
        return inserted == 1

    async def chat_run(self, run_id: str) -> dict[str, Any] | None:
        row = await self._fetchrow("SELECT state FROM chat_runs WHERE run_id=$1", run_id)
        return dict(json.loads(row["state"])) if row else None

    async def add_chat_summary(self, thread_id: str, upto_id: int, text: str) -> None:
        await self._fenced(
            await self._conversation_of_thread(thread_id),
            "w AS (INSERT INTO chat_summaries(thread_id, upto_id, text, created_at) SELECT $4, $5, $6, $7"
            " WHERE EXISTS (SELECT 1 FROM fence) ON CONFLICT (thread_id, upto_id) DO UPDATE"
            " SET text=EXCLUDED.text, created_at=EXCLUDED.created_at RETURNING 1)",
            (thread_id, upto_id, _text(text), time.time()))

    async def thread_provider(self, thread_id: str) -> str | None:
        row = await self._fetchrow("SELECT provider FROM thread_providers WHERE thread_id=$1", thread_id)
        return str(row["provider"]) if row else None

    async def set_thread_provider(self, thread_id: str, provider: str) -> None:
        await self._execute(
            "INSERT INTO thread_providers(thread_id, provider) VALUES ($1, $2)"
            " ON CONFLICT (thread_id) DO UPDATE SET provider=EXCLUDED.provider", thread_id, provider)

    async def _conversation_of_thread(self, thread_id: str, run_id: str | None = None) -> str | None:
        """The conversation whose turn writes to this chat thread (to fence the write): by the run's turn, else
        by the conversation or sub-assistant thread that points at it; None when unfenced or unknown."""
        if self.owner is None:
            return None
        if run_id is not None:
            row = await self._fetchrow("SELECT turn_id FROM runs WHERE remote_id=$1", run_id)
            if row is not None:
                return await self._conversation_of(str(row["turn_id"]))
        known = self._thread_conversations.get(thread_id)
        if known is None:
            row = await self._fetchrow(
                "SELECT COALESCE((SELECT key FROM conversations WHERE main_thread=$1 LIMIT 1),"
                " (SELECT conversation FROM sub_threads WHERE thread_id=$1 LIMIT 1)) AS c", thread_id)
            if row is None or row["c"] is None:
                return None
            known = self._thread_conversations[thread_id] = str(row["c"])
        return known

    # ---- response chains: not fenced (no turn's text is in them): `advance_chain`'s compare-and-set is their guard,
    # so when two instances race to move a head exactly one wins ----

    async def create_chain(self, thread_id: str) -> None:
        created = await self._fetchrow(
            "INSERT INTO response_chains(thread_id, updated_at) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
            thread_id, time.time())
        if created is None:
            raise StoreError(f"response chain {thread_id} already exists")

    async def chain(self, thread_id: str) -> ChainRecord | None:
        row = await self._fetchrow("SELECT head, cancelled FROM response_chains WHERE thread_id=$1", thread_id)
        return ChainRecord(thread_id, row["head"], tuple(json.loads(row["cancelled"]))) if row else None

    async def advance_chain(self, thread_id: str, previous: str | None, head: str) -> bool:
        # one statement: a racing one waits for the row and re-checks the new head, so one of two racers moves it;
        # a head that already is `head` is kept as it is
        status = await self._execute(
            "UPDATE response_chains SET head=$3,"
            " cancelled=CASE WHEN head IS NOT DISTINCT FROM $2 THEN '[]' ELSE cancelled END,"
            " updated_at=CASE WHEN head IS NOT DISTINCT FROM $2 THEN $4 ELSE updated_at END"
            " WHERE thread_id=$1 AND (head IS NOT DISTINCT FROM $2 OR head=$3)",
            thread_id, previous, head, time.time())
        return int(status.split()[-1]) == 1

    async def cancel_chain_calls(self, thread_id: str, call_ids: Sequence[str]) -> None:
        if not call_ids:
            return

        async def run(conn: Connection) -> None:
            async with conn.transaction():  # the row held from read to write: no concurrent change is lost
                cancelled = await conn.fetchval(
                    "SELECT cancelled FROM response_chains WHERE thread_id=$1 FOR UPDATE", thread_id)
                if cancelled is not None:
                    merged = list(dict.fromkeys([*json.loads(cancelled), *call_ids]))
                    await conn.execute("UPDATE response_chains SET cancelled=$2, updated_at=$3 WHERE thread_id=$1",
                                       thread_id, _dumps(merged), time.time())

        await self._op(run)

    async def delete_chain(self, thread_id: str) -> None:
        await self._execute("DELETE FROM response_chains WHERE thread_id=$1", thread_id)

    # ---- admin and audit ----

    async def conversations(self, channel: str | None = None) -> list[ConversationRecord]:
        if channel is None:
            rows = await self._fetch("SELECT * FROM conversations ORDER BY created_at")
        else:
            rows = await self._fetch("SELECT * FROM conversations WHERE channel=$1 ORDER BY created_at", channel)
        return [_conversation(r) for r in rows]

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._execute(
            "INSERT INTO audit(at, platform, actor, action, target, outcome, detail) VALUES ($1,$2,$3,$4,$5,$6,$7)",
            entry.at, entry.platform, _text(entry.actor), entry.action, _text(entry.target), entry.outcome,
            _text(entry.detail))

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        rows = await self._fetch("SELECT * FROM audit ORDER BY id DESC LIMIT $1", limit)
        return [AuditEntry(at=r["at"], platform=r["platform"], actor=r["actor"], action=r["action"],
                           target=r["target"], outcome=r["outcome"], detail=r["detail"]) for r in rows]

    # ---- retention ----

    async def prune(self, policy: RetentionPolicy, now: float | None = None) -> PruneCounts:
        counts: dict[str, int] = {}
        for step in prune_steps(policy, now):
            sql = postgres_sql(step.sql)
            while True:
                deleted = int((await self._execute(sql, *step.params)).split()[-1])
                counts[step.field] = counts.get(step.field, 0) + deleted
                if deleted < BATCH:
                    break
        return PruneCounts(**counts)


    # ---- rate limits, usage and deletion ----

    async def admit_inbound(self, message: InboxMessage, quotas: Mapping[str, int], minute: int) -> str:
        """One transaction holding the quota buckets' counter rows (locked by an upsert, in bucket order so that two
        admissions never wait on each other crosswise): concurrent senders on any instance count exactly."""
        if not quotas:  # no rate limits: one statement, as add_inbound
            return "" if await self.add_inbound(message) else "duplicate"
        buckets = sorted(quotas)

        async def run(conn: Connection) -> str:
            if await conn.fetchval("SELECT 1 FROM inbox WHERE event_id=$1", message.event_id) is not None:
                return "duplicate"
            async with conn.transaction():
                # creates the minute's rows at zero or, for those that exist, locks them (DO UPDATE) in bucket order
                rows = await conn.fetch(
                    "INSERT INTO rate_counters(bucket, minute, count) SELECT b, $2, 0 FROM unnest($1::text[]) AS b"
                    " ORDER BY b ON CONFLICT (bucket, minute) DO UPDATE SET count=rate_counters.count"
                    " RETURNING bucket, count", buckets, minute)
                counts = {str(r["bucket"]): int(r["count"]) for r in rows}
                for bucket, limit in quotas.items():
                    if counts.get(bucket, 0) >= limit:
                        return bucket  # leaving the block commits only the zero rows, which count nothing
                stored = await conn.fetch(
                    "WITH c AS (INSERT INTO conversations(key, platform, channel, started_by, created_at)"
                    " VALUES ($2,$3,$4,$5,$9) ON CONFLICT DO NOTHING),"
                    " i AS (INSERT INTO inbox(event_id, conversation, platform, channel, user_id, text, route, state,"
                    " received_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING RETURNING conversation),"
                    " u AS (UPDATE rate_counters SET count=count+1 WHERE bucket = ANY($10::text[]) AND minute=$11"
                    "  AND EXISTS (SELECT 1 FROM i)),"
                    " d AS (DELETE FROM rate_counters WHERE minute < $11 - 1 AND EXISTS (SELECT 1 FROM i))"
                    f" SELECT pg_notify('{INBOX_CHANNEL}', conversation) FROM i",
                    message.event_id, message.conversation, message.platform, message.channel,
                    _text(message.user), _text(message.text), _dumps(dict(message.route)), message.state,
                    message.received_at, buckets, minute)
                if not stored:  # the same event stored by a concurrent call since the first look: nothing counted
                    return "duplicate"
            return ""

        return await self._op(run)

    async def add_usage(self, day: str, buckets: Sequence[str], *, input_tokens: int = 0, output_tokens: int = 0,
                        cost: float = 0.0, granted_tokens: int = 0, granted_cost: float = 0.0,
                        cached_input_tokens: int = 0) -> None:
        await self._execute(
            "INSERT INTO usage(day, bucket, input_tokens, output_tokens, cost, granted_tokens, granted_cost,"
            " cached_input_tokens) SELECT $1, b, $3, $4, $5, $6, $7, $8 FROM unnest($2::text[]) AS b ORDER BY b"
            " ON CONFLICT (day, bucket) DO UPDATE SET input_tokens=usage.input_tokens+EXCLUDED.input_tokens,"
            " output_tokens=usage.output_tokens+EXCLUDED.output_tokens, cost=usage.cost+EXCLUDED.cost,"
            " granted_tokens=usage.granted_tokens+EXCLUDED.granted_tokens,"
            " granted_cost=usage.granted_cost+EXCLUDED.granted_cost,"
            " cached_input_tokens=usage.cached_input_tokens+EXCLUDED.cached_input_tokens",
            day, list(dict.fromkeys(buckets)), input_tokens, output_tokens, cost, granted_tokens, granted_cost,
            cached_input_tokens)

    async def usage_on(self, day: str, buckets: Sequence[str] | None = None) -> list[UsageRow]:
        if buckets is None:
            rows = await self._fetch("SELECT * FROM usage WHERE day=$1 ORDER BY bucket", day)
        else:
            rows = await self._fetch(
                "SELECT * FROM usage WHERE day=$1 AND bucket = ANY($2::text[]) ORDER BY bucket", day, list(buckets))
        return [UsageRow(r["day"], r["bucket"], int(r["input_tokens"]), int(r["output_tokens"]), float(r["cost"]),
                         int(r["granted_tokens"]), float(r["granted_cost"]), int(r["cached_input_tokens"]))
                for r in rows]

    async def forget_user(self, user: str, platform: str | None = None, dry_run: bool = False) -> ForgetReport:
        """As on SQLite, in one transaction (rolled back for `dry_run`); then VACUUM of the tables it deleted from,
        so the deleted rows do not stay as dead tuples. PostgreSQL's WAL and any backups keep their copies until
        they are recycled (README, "Access and budgets")."""
        report = await self._op(lambda conn: _forget(conn, user, platform, dry_run))
        if not dry_run:
            self._thread_conversations.clear()
            await self._execute(f"VACUUM {', '.join(FORGET_TABLES)}")
        return report


async def _migrate(conn: Connection, where: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS switchboard_schema (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT max(version) FROM switchboard_schema") or 0
        if current > PG_SCHEMA_VERSION:
            raise StoreError(
                f"database {where} has schema version {current}, newer than this Switchboard ({PG_SCHEMA_VERSION})")
        for version in range(current + 1, PG_SCHEMA_VERSION + 1):
            await conn.execute(PG_MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO switchboard_schema(version) VALUES ($1)", version)


async def _forget(conn: Connection, user: str, platform: str | None, dry_run: bool) -> ForgetReport:
    """`forget_user` on one connection: the same steps as `storage.sqlite._forget`, in one transaction."""
    tr = conn.transaction()
    await tr.start()
    try:
        report = await _forget_in(conn, user, platform)
    except BaseException:
        await tr.rollback()
        raise
    await (tr.rollback() if dry_run else tr.commit())
    return report


async def _forget_in(conn: Connection, user: str, platform: str | None) -> ForgetReport:
    who, who_args = ("user_id=$1", [user]) if platform is None else ("user_id=$1 AND platform=$2", [user, platform])
    started = "started_by=$1" + ("" if platform is None else " AND platform=$2")
    mine = await conn.fetch(f"SELECT conversation, turn_id, text FROM inbox WHERE {who} FOR UPDATE", *who_args)
    turns = sorted({r["turn_id"] for r in mine if r["turn_id"]})
    convs = sorted({r["conversation"] for r in mine} | {
        r["key"] for r in await conn.fetch(f"SELECT key FROM conversations WHERE {started}", *who_args)})
    threads: set[str] = set()
    threads.update(r[0] for r in await conn.fetch(
        "SELECT main_thread FROM conversations WHERE key = ANY($1::text[]) AND main_thread IS NOT NULL", convs))
    threads.update(r[0] for r in await conn.fetch(
        "SELECT thread_id FROM sub_threads WHERE conversation = ANY($1::text[])", convs))
    await conn.execute("UPDATE conversations SET main_thread=NULL WHERE key = ANY($1::text[])", convs)
    await conn.execute("DELETE FROM sub_threads WHERE conversation = ANY($1::text[])", convs)
    # entries the user wrote that no turn claims (a migration's copies, a crash before claiming)
    await conn.execute(
        "DELETE FROM transcript t USING unnest($1::text[], $2::text[]) AS u(c, text)"
        " WHERE t.conversation=u.c AND t.role='user' AND t.text=u.text",
        [r["conversation"] for r in mine], [r["text"] for r in mine])
    runs = sorted({(r[0], r[1]) for r in await conn.fetch(
        "SELECT remote_id, thread_id FROM runs WHERE turn_id = ANY($1::text[])", turns)})
    threads.update(thread for _, thread in runs)
    for table, column in (("transcript", "turn_id"), ("runs", "turn_id"), ("tool_calls", "turn_id"), ("turns", "id")):
        await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY($1::text[])", turns)
    await conn.execute(  # others' messages in those turns: answered anew unless the answer was delivered
        "UPDATE inbox SET turn_id=NULL, state=CASE WHEN state='in_turn' THEN 'pending' ELSE state END"
        " WHERE turn_id = ANY($1::text[])", turns)
    for table in CHAT_THREAD_TABLES:  # threads the chat backend keeps here: in this same transaction
        await conn.execute(f"DELETE FROM {table} WHERE thread_id = ANY($1::text[])", sorted(threads))
    for table in HANDOFF_CONVERSATION_TABLES:  # handoffs: the conversation starts afresh at the entry
        await conn.execute(f"DELETE FROM {table} WHERE conversation = ANY($1::text[])", convs)
    deleted = int((await conn.execute(f"DELETE FROM inbox WHERE {who}", *who_args)).split()[-1])
    await conn.execute(f"UPDATE conversations SET started_by='' WHERE {started}", *who_args)
    if turns:  # wake the owners: others' messages of a deleted turn are pending again
        await conn.execute(f"SELECT pg_notify('{INBOX_CHANNEL}', c) FROM unnest($1::text[]) AS c", convs)
    return ForgetReport(messages=deleted, turns=len(turns), conversations=tuple(convs), threads=tuple(sorted(threads)),
                        runs=tuple(runs))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _turn_update_sql(update: TurnUpdate, first: int) -> tuple[str, list[Any]]:
    """The SET clause of `update` (`updated_at` always), its parameters numbered from `first`."""
    params: list[Any] = [time.time()]
    sets = [f"updated_at=${first}"]
    for column in ("state", "reply_kind", "reply_text", "delivered_ref"):
        value = getattr(update, column)
        if value is not None:
            params.append(_text(value))
            sets.append(f"{column}=${first + len(params) - 1}")
    for column, amount in (("retries", update.add_retries), ("input_tokens", update.add_input_tokens),
                           ("output_tokens", update.add_output_tokens)):
        if amount:
            params.append(amount)
            sets.append(f"{column}={column}+${first + len(params) - 1}")
    return ", ".join(sets), params


def _conversation(row: asyncpg.Record) -> ConversationRecord:
    return ConversationRecord(key=row["key"], platform=row["platform"], channel=row["channel"],
                              started_by=row["started_by"], generation=int(row["generation"]),
                              main_thread=row["main_thread"], created_at=row["created_at"])


def _inbox(row: asyncpg.Record) -> InboxMessage:
    return InboxMessage(event_id=row["event_id"], conversation=row["conversation"], platform=row["platform"],
                        channel=row["channel"], user=row["user_id"], text=row["text"], route=json.loads(row["route"]),
                        received_at=row["received_at"], state=row["state"], turn_id=row["turn_id"])


def _turn(row: asyncpg.Record) -> TurnRecord:
    return TurnRecord(id=row["id"], conversation=row["conversation"], generation=int(row["generation"]),
                      state=row["state"], created_at=row["created_at"], updated_at=row["updated_at"],
                      reply_kind=row["reply_kind"], reply_text=row["reply_text"], delivered_ref=row["delivered_ref"],
                      retries=int(row["retries"]), input_tokens=int(row["input_tokens"]),
                      output_tokens=int(row["output_tokens"]))


def _run(row: asyncpg.Record) -> RunRecord:
    return RunRecord(remote_id=row["remote_id"], turn_id=row["turn_id"], scope=row["scope"], agent=row["agent"],
                     thread_id=row["thread_id"], status=row["status"], attempt=int(row["attempt"]),
                     input=json.loads(row["input"]), last_seq=row["last_seq"], created_at=row["created_at"])
