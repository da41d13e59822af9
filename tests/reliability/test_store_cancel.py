"""A store operation whose caller is cancelled (a health check's timeout, an admin reset stopping a turn) still
runs to completion as one unit: it never leaves the shared connection inside a transaction, never half-applies a
transaction, and never stops later writes (ours or another process's) from landing durably.

The cancel is made to land mid-operation deterministically: another connection holds the database's write lock,
so the operation cannot finish (it waits in SQLite's busy handler, or queued behind one that does) until the test
lets go, and the timeout that cancels the caller necessarily fires while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from storage.base import AuditEntry, InboxMessage, TurnRecord
from storage.sqlite import SQLiteStore

CANCEL_AFTER = 0.02  # any delay works: the operation cannot finish before the test releases the lock
LOCK_WAIT = 2.0  # how long another connection waits for the write lock; instant unless ours is stuck in a transaction
CONV = "console:cancel:c1"

Operation = Callable[[SQLiteStore], Awaitable[object]]


def _message(event_id: str, text: str) -> InboxMessage:
    return InboxMessage(event_id, CONV, "console", "ch", "u1", text, {}, time.time())


def _audit(action: str) -> AuditEntry:
    return AuditEntry(time.time(), "console", "u1", action, CONV, "done")


def _turn(turn_id: str) -> TurnRecord:
    now = time.time()
    return TurnRecord(turn_id, CONV, 0, "running", now, now)


async def _probe(store: SQLiteStore) -> object:
    return await store.writable()


async def _write(store: SQLiteStore) -> object:
    await store.add_audit(_audit("cancelled-write"))
    return None


async def _transaction(store: SQLiteStore) -> object:
    await store.start_turn(_turn("t-cancelled"), [_message("e1", "one"), _message("e2", "two")], "main")
    return None


OPERATIONS: dict[str, Operation] = {"writable": _probe, "write": _write, "transaction": _transaction}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "s.db")
    await opened.open()
    for event_id, text in (("e1", "one"), ("e2", "two")):
        assert await opened.add_inbound(_message(event_id, text))
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.contextmanager
def write_lock_held_elsewhere(path: str | Path) -> Iterator[None]:
    """Another connection (as another process would) holds the database's write lock until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def _take_write_lock(path: str | Path) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=LOCK_WAIT, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if our connection kept its transaction
        other.execute("ROLLBACK")


async def _cancelled_while_blocked(store: SQLiteStore, operation: Operation, *, queued: bool) -> None:
    """Run `operation` and cancel it (by a timeout, as the health check does) while it cannot finish.

    queued=False: it waits for the write lock itself. queued=True: it waits behind a writability probe, itself
    cancelled already, that still waits for the lock on the database thread."""
    with write_lock_held_elsewhere(store.path):
        if queued:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(CANCEL_AFTER):
                    await store.writable()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(CANCEL_AFTER):
                await operation(store)


async def _assert_healthy_and_durable(store: SQLiteStore) -> None:
    """Later writes work, nothing holds the write lock, and a write made now survives reopening."""
    await store.add_audit(_audit("after"))
    assert await store.writable(), "the connection was left inside a transaction"
    await asyncio.to_thread(_take_write_lock, store.path)
    await store.close()
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        actions = [row[0] for row in db.execute("SELECT action FROM audit ORDER BY id")]
    assert "after" in actions, "a write after the cancel was lost on close: it had joined an open transaction"


def _turn_rows(path: str) -> tuple[int, list[tuple[str, str | None]], int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        turns = db.execute("SELECT COUNT(*) FROM turns WHERE id='t-cancelled'").fetchone()[0]
        inbox = db.execute("SELECT state, turn_id FROM inbox ORDER BY seq").fetchall()
        transcript = db.execute("SELECT COUNT(*) FROM transcript WHERE turn_id='t-cancelled'").fetchone()[0]
    return turns, inbox, transcript


@pytest.mark.parametrize("queued", [False, True], ids=["waiting-for-the-lock", "queued-behind-another"])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
async def test_a_cancelled_operation_completes_as_one_unit_and_later_writes_land(
    store: SQLiteStore, name: str, queued: bool
) -> None:
    await _cancelled_while_blocked(store, OPERATIONS[name], queued=queued)
    assert await store.get_conversation(CONV) is not None  # queued after it: the cancelled operation has finished
    turns, inbox, transcript = _turn_rows(store.path)
    actions = [entry.action for entry in await store.recent_audit()]
    if name == "transaction":  # issued, so it completed: every statement of it, not a prefix
        assert (turns, inbox, transcript) == (1, [("in_turn", "t-cancelled")] * 2, 2)
    else:
        assert (turns, inbox, transcript) == (0, [("pending", None)] * 2, 0)
    assert actions == (["cancelled-write"] if name == "write" else [])
    await _assert_healthy_and_durable(store)


async def test_a_cancelled_transaction_that_fails_at_its_last_statement_leaves_nothing(store: SQLiteStore) -> None:
    # transcript.text is NOT NULL: the fifth and last statement fails after four have run inside the transaction
    broken = [_message("e1", "one"), dataclasses.replace(_message("e2", "two"), text=None)]

    async def failing_transaction(s: SQLiteStore) -> object:
        await s.start_turn(_turn("t-cancelled"), broken, "main")
        return None

    await _cancelled_while_blocked(store, failing_transaction, queued=False)
    assert await store.get_conversation(CONV) is not None  # queued after it: the transaction has finished
    assert _turn_rows(store.path) == (0, [("pending", None)] * 2, 0)
    await _assert_healthy_and_durable(store)


async def test_the_health_check_timing_out_during_begin_immediate_leaves_no_transaction(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case from issue 12: `/healthz`'s timeout fired while the probe's BEGIN IMMEDIATE waited for the lock."""
    from bot import ops

    monkeypatch.setattr(ops, "CHECK_TIMEOUT_SECONDS", CANCEL_AFTER)
    with write_lock_held_elsewhere(store.path):
        assert await ops.OpsServer._run(store.writable) is False
    await _assert_healthy_and_durable(store)
