"""`switchboard migrate-store`: copy a SQLite database into PostgreSQL, table by table, in batches. Idempotent: each
row is upserted by its primary key, so running it again copies what is new and brings changed rows up to date.

The SQLite file is first migrated to its current schema (as opening the bot would), then read in rowid order in
batches on a worker thread; the PostgreSQL side takes each batch in one transaction. Sequences (the inbox's order,
transcript and audit ids) continue after the highest copied value, so new rows sort after the copied ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

BATCH_ROWS = 2000


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    booleans: tuple[str, ...] = ()
    sequence_column: str | None = None  # an identity column whose sequence must continue after the copy


TABLES: tuple[Table, ...] = (
    Table("conversations", ("key", "platform", "channel", "started_by", "generation", "main_thread", "created_at"),
          ("key",)),
    Table("sub_threads", ("conversation", "generation", "path", "thread_id"), ("conversation", "generation", "path")),
    Table("inbox", ("event_id", "conversation", "platform", "channel", "user_id", "text", "route", "state", "turn_id",
                    "received_at", "seq"), ("event_id",), sequence_column="seq"),
    Table("turns", ("id", "conversation", "generation", "state", "reply_kind", "reply_text", "delivered_ref",
                    "retries", "input_tokens", "output_tokens", "created_at", "updated_at"), ("id",)),
    Table("runs", ("remote_id", "turn_id", "scope", "agent", "thread_id", "status", "attempt", "last_seq", "input",
                   "created_at", "updated_at", "input_tokens", "cached_input_tokens", "output_tokens"), ("remote_id",)),
    Table("tool_calls", ("turn_id", "scope", "call_id", "name", "arguments", "output", "ok"),
          ("turn_id", "scope", "call_id"), booleans=("ok",)),
    Table("transcript", ("id", "conversation", "generation", "thread_path", "role", "text", "turn_id", "reset",
                         "created_at"), ("id",), booleans=("reset",), sequence_column="id"),
    Table("audit", ("id", "at", "platform", "actor", "action", "target", "outcome", "detail"), ("id",),
          sequence_column="id"),
    Table("agents", ("backend", "name", "remote_id", "content_hash"), ("backend", "name")),
    Table("chat_threads", ("thread_id", "created_at"), ("thread_id",)),
    Table("chat_messages", ("id", "thread_id", "run_id", "message", "created_at"), ("id",), sequence_column="id"),
    Table("chat_runs", ("run_id", "thread_id", "state", "created_at"), ("run_id",)),
    Table("chat_summaries", ("thread_id", "upto_id", "text", "created_at"), ("thread_id", "upto_id")),
    Table("thread_providers", ("thread_id", "provider"), ("thread_id",)),
    Table("rate_counters", ("bucket", "minute", "count"), ("bucket", "minute")),
    Table("usage", ("day", "bucket", "input_tokens", "output_tokens", "cost", "granted_tokens", "granted_cost",
                    "cached_input_tokens"), ("day", "bucket")),
    Table("handoff_state", ("conversation", "generation", "active", "state", "from_agent", "reason", "notes",
                            "updated_at"), ("conversation", "generation")),
    Table("handoffs", ("id", "conversation", "generation", "turn_id", "call_id", "from_agent", "to_agent", "reason",
                       "notes", "state", "source", "at"), ("id",), sequence_column="id"),
    Table("turn_agents", ("turn_id", "conversation", "generation", "agent"), ("turn_id",)),
    Table("response_chains", ("thread_id", "head", "cancelled", "updated_at"), ("thread_id",)),
)


def upsert_sql(table: Table) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c not in table.key)
    return (f"INSERT INTO {table.name} ({', '.join(table.columns)}) OVERRIDING SYSTEM VALUE VALUES ({marks})"
            f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}")


async def copy_sqlite_to_postgres(sqlite_path: str, target: PostgresStore,
                                  progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table; returns the rows copied per table. `target` must be open; the SQLite file must exist."""
    source = SQLiteStore(sqlite_path)
    await source.open()  # brings the file to the current schema
    await source.close()
    reader = await asyncio.to_thread(_connect, sqlite_path)
    copied: dict[str, int] = {}
    try:
        for table in TABLES:
            copied[table.name] = await _copy_table(reader, table, target, progress)
    finally:
        await asyncio.to_thread(reader.close)
    return copied


async def _copy_table(reader: sqlite3.Connection, table: Table, target: PostgresStore,
                      progress: Callable[[str, int], None] | None) -> int:
    sql = upsert_sql(table)
    after, total = 0, 0
    while True:
        rows = await asyncio.to_thread(_batch, reader, table, after)
        if not rows:
            break
        after = rows[-1][0]
        records = [_convert(table, row[1:]) for row in rows]

        async def write(conn: Any, records: list[tuple[Any, ...]] = records) -> None:
            async with conn.transaction():
                await conn.executemany(sql, records)

        await target._op(write)
        total += len(records)
        if progress is not None:
            progress(table.name, total)
    if table.sequence_column is not None:
        await target._execute(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{table.sequence_column}'),"
            f" GREATEST((SELECT max({table.sequence_column}) FROM {table.name}), 1))")
    return total


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA query_only=1")
    return conn


def _batch(reader: sqlite3.Connection, table: Table, after: int) -> list[tuple[Any, ...]]:
    return reader.execute(
        f"SELECT rowid, {', '.join(table.columns)} FROM {table.name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
        (after, BATCH_ROWS)).fetchall()


def _convert(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    for i, column in enumerate(table.columns):
        if column in table.booleans and values[i] is not None:
            values[i] = bool(values[i])
        elif isinstance(values[i], str):
            values[i] = values[i].replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
    return tuple(values)
