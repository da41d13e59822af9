"""Storage growth: how fast a message is accepted (`Store.add_inbound`, the database part of `Bot.accept`) and how
fast the worker's per-turn queries run, with 10k, 100k and 1M messages already stored, on SQLite and PostgreSQL.

    python -m benchmarks.storage                     # both stores, 10k / 100k / 1M (a few minutes)
    python -m benchmarks.storage --sizes 10000 100000 --stores sqlite
    python -m benchmarks.storage --stores sqlite --old-sqlite-schema --sizes 10000 100000   # MAX(seq) by scan

History is bulk-loaded (answered messages of delivered turns over 10,000 conversations) between measurements; each
measurement accepts `--accepts` new messages one at a time into random conversations, then runs one turn's worker
queries (pending, start, claimed messages, unfinished turns) as many times. PostgreSQL is a throwaway local server
(fakes/pg_cluster.py) with fsync on, as in production; SQLite is WAL with synchronous=NORMAL, as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fakes.pg_cluster import PgCluster
from storage.base import InboxMessage, Store, TurnRecord
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

CONVERSATIONS = 10_000
SIZES = (10_000, 100_000, 1_000_000)
LOAD_BATCH = 50_000
WARMUP = 200


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def history(start: int, stop: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Inbox rows (answered) and their delivered turns, two messages per turn, for message numbers [start, stop)."""
    now = time.time()
    inbox, turns = [], []
    for n in range(start, stop):
        conversation = f"bench:c{n % CONVERSATIONS}"
        turn = f"turn_h{n // 2}"
        inbox.append((f"h{n}", conversation, "slack", "ch", "u1", f"message {n}", '{"ts":"1"}', "answered", turn,
                      now - 86_400))
        if n % 2 == 0:
            turns.append((turn, conversation, 0, "delivered", "answer", "ok", "ref", now - 86_400, now - 86_400))
    return inbox, turns


INBOX_COLUMNS = ["event_id", "conversation", "platform", "channel", "user_id", "text", "route", "state", "turn_id",
                 "received_at"]  # seq: the next one, as the store assigns it
TURN_COLUMNS = ["id", "conversation", "generation", "state", "reply_kind", "reply_text", "delivered_ref", "created_at",
                "updated_at"]


def load_sqlite(path: str, start: int, stop: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        if start == 0:
            conn.executemany("INSERT OR IGNORE INTO conversations(key, platform, channel, started_by, created_at)"
                             " VALUES (?, 'slack', 'ch', 'u1', 0)", [(f"bench:c{i}",) for i in range(CONVERSATIONS)])
        for chunk in range(start, stop, LOAD_BATCH):
            inbox, turns = history(chunk, min(stop, chunk + LOAD_BATCH))
            conn.executemany(f"INSERT INTO inbox({', '.join(INBOX_COLUMNS)}, seq) VALUES ({', '.join('?' * 10)},"
                             " (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox))", inbox)
            conn.executemany(f"INSERT INTO turns({', '.join(TURN_COLUMNS)}) VALUES ({', '.join('?' * 9)})", turns)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the load's pages, not the measured accepts, pay for it
    finally:
        conn.close()


async def load_postgres(store: PostgresStore, start: int, stop: int) -> None:
    async with store.pool.acquire() as conn:
        if start == 0:
            await conn.copy_records_to_table("conversations", columns=["key", "platform", "channel", "started_by",
                                                                      "created_at"],
                                             records=[(f"bench:c{i}", "slack", "ch", "u1", 0.0)
                                                      for i in range(CONVERSATIONS)])
        for chunk in range(start, stop, LOAD_BATCH):
            inbox, turns = history(chunk, min(stop, chunk + LOAD_BATCH))
            await conn.copy_records_to_table("inbox", columns=INBOX_COLUMNS, records=inbox)
            await conn.copy_records_to_table("turns", columns=TURN_COLUMNS, records=turns)
        await conn.execute("VACUUM ANALYZE")


async def timed(n: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await step(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(store: Store, size: int, accepts: int) -> dict[str, float]:
    rng = random.Random(size)
    tag = f"{size}-{rng.randrange(1 << 30)}"

    async def accept(i: int) -> None:
        conversation = f"bench:c{rng.randrange(CONVERSATIONS)}"
        await store.add_inbound(InboxMessage(f"m{tag}-{i}", conversation, "slack", "ch", "u1", "a question",
                                             {"ts": "1"}, time.time()))

    await timed(WARMUP, lambda i: accept(accepts + i))  # caches and prepared statements, not measured
    accept_ms = await timed(accepts, accept)

    async def worker_turn(i: int) -> None:  # what `ConversationWorker.process` asks of the store for one turn
        conversation = f"bench:w{tag}-{i}"
        await store.add_inbound(InboxMessage(f"w{tag}-{i}", conversation, "slack", "ch", "u1", "q", {}, time.time()))
        pending = await store.pending_inbound(conversation)
        await store.get_conversation(conversation)
        turn = TurnRecord.new(conversation, 0)
        await store.start_turn(turn, pending, "main")
        await store.inbound_for_turn(turn.id)
        await store.unfinished_turns(conversation)
        await store.finish_delivery(turn.id, "ref", [m.event_id for m in pending])

    worker_ms = await timed(accepts, worker_turn)
    return {"accept_p50_ms": statistics.median(accept_ms), "accept_p99_ms": percentile(accept_ms, 99),
            "worker_turn_p50_ms": statistics.median(worker_ms), "worker_turn_p99_ms": percentile(worker_ms, 99)}


async def run_store(kind: str, sizes: list[int], accepts: int, old_schema: bool) -> dict[int, dict[str, float]]:
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        cluster = PgCluster.start(fsync=True) if kind == "postgres" else None
        try:
            store: Store
            if cluster is not None:
                store = PostgresStore(cluster.create_database("bench"))
            else:
                store = SQLiteStore(str(Path(folder) / "bench.db"))
            await store.open()
            loaded = 0
            for size in sizes:
                started = time.perf_counter()
                if old_schema and isinstance(store, SQLiteStore) and loaded:
                    await store._write("CREATE INDEX inbox_seq ON inbox(seq)")  # for the bulk load only
                if isinstance(store, SQLiteStore):
                    await asyncio.to_thread(load_sqlite, store.path, loaded, size)
                else:
                    assert isinstance(store, PostgresStore)
                    await load_postgres(store, loaded, size)
                loaded = size
                load_s = time.perf_counter() - started
                if old_schema and isinstance(store, SQLiteStore):  # measured without schema version 4's index
                    await store._write("DROP INDEX inbox_seq")
                results[size] = await measure(store, size, accepts)
                figures = results[size]
                print(f"{kind:9} {size:>9,} stored  accept p50 {figures['accept_p50_ms']:6.2f} ms"
                      f"  p99 {figures['accept_p99_ms']:6.2f} ms   worker turn p50 {figures['worker_turn_p50_ms']:6.2f}"
                      f" ms  p99 {figures['worker_turn_p99_ms']:6.2f} ms   (loaded in {load_s:.0f}s)", flush=True)
            await store.close()
        finally:
            if cluster is not None:
                cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--accepts", type=int, default=2000, help="messages accepted per measurement")
    parser.add_argument("--old-sqlite-schema", action="store_true",
                        help="measure SQLite without the inbox_seq index (before schema version 4: MAX(seq) scans)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    for kind in args.stores:
        results = asyncio.run(run_store(kind, sorted(args.sizes), args.accepts, args.old_sqlite_schema))
        smallest, largest = min(results), max(results)
        ratio = results[largest]["accept_p99_ms"] / results[smallest]["accept_p99_ms"]
        print(f"{kind:9} accept p99 at {largest:,} / at {smallest:,}: {ratio:.2f}x (goal: at most 2x)", flush=True)
        report[kind] = {"results": results, "p99_ratio": ratio}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
