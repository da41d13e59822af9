"""The connection a `SQLiteStore` runs on: one stdlib `sqlite3` connection, opened (WAL, migrated) and then used only
on its own thread. Each operation is one function that thread runs whole, one at a time, in the order called, so a
cancelled caller only stops waiting and can neither leave the connection inside a transaction nor apply part of one.

Operations never interleave (no lock is needed) and each is one trip to the thread. Not aiosqlite: it has no public
way to run a function on its thread, and a transaction in one trip was a measured gain (docs/PERFORMANCE.md). A plain
thread fed by a `queue.SimpleQueue` costs what aiosqlite's did per trip; `loop.run_in_executor` on a one-worker pool
measured ~50% more CPU per trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from storage.base import StoreError
from storage.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("switchboard.storage")

BUSY_TIMEOUT_MS = 5000

T = TypeVar("T")
Statements = list[tuple[str, tuple[Any, ...]]]
_Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class StatementResult:
    """One statement's rows (fetched in the same trip) and row count."""

    rows: list[sqlite3.Row]
    rowcount: int


class ConnectionThread:
    """A `sqlite3` connection and the one thread that uses it. Jobs run there one at a time, in the order called;
    nothing takes a job back out of the queue, so a caller's cancel cancels only its wait, never the job."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._sqlite: sqlite3.Connection | None = None
        # A daemon: a store never closed must not hold the process open; WAL rolls an interrupted write back.
        threading.Thread(target=self._work, name="switchboard-sqlite", daemon=True).start()

    @classmethod
    async def open(cls, path: str) -> ConnectionThread:
        """Connect, configure (WAL, busy timeout, foreign keys) and migrate to `SCHEMA_VERSION` on a new thread."""
        connection = cls()
        try:
            connection._sqlite = await connection._submit(_open, path)
        except BaseException:
            connection._jobs.put(None)
            raise
        return connection

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> StatementResult:
        """One statement, in its own transaction unless it is a transaction control statement."""
        return await self._submit(_execute, self._connection(), sql, tuple(params))

    async def transaction(self, statements: Statements) -> int:
        """Several statements that land together or not at all; the row count of the last one."""
        return await self._submit(_apply_transaction, self._connection(), statements)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` inside one write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK if it raises):
        for an operation whose later statements depend on what its earlier ones read."""
        return await self._submit(_run_in_transaction, self._connection(), fn, args)

    async def probe_write(self) -> None:
        """Take the write lock (waiting up to the busy timeout) and give it back at once; raises if it cannot."""
        await self._submit(_probe_write, self._connection())

    async def close(self) -> None:
        """Close once every job already called has finished; the thread then ends. Closing twice does nothing."""
        sqlite, self._sqlite = self._sqlite, None
        if sqlite is None:
            return
        try:
            await self._submit(sqlite.close)
        finally:
            self._jobs.put(None)

    def _connection(self) -> sqlite3.Connection:
        if self._sqlite is None:
            raise StoreError("store is not open")
        return self._sqlite

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, fn, args))
        return await future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            result, error = None, None
            try:
                result = fn(*args)
            except BaseException as exc:  # whatever it is, it is the caller's to handle
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's event loop is closed: nobody is left to tell
                future.get_loop().call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled and stopped waiting; the job ran all the same
        if error is not None:
            log.warning("a database operation whose caller was cancelled failed: %s", error)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# ---- functions run on the database thread: each one whole, so no transaction outlives it ----


def _open(path: str) -> sqlite3.Connection:
    """Connect, configure and migrate; the connection is closed again if any of that fails."""
    # isolation_level=None: sqlite3 opens no implicit transactions; ours are explicit and end in the same function.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")  # deleted rows (`forget_user`) are overwritten, not left in free pages
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"database {path} has schema version {current}, newer than this Switchboard ({SCHEMA_VERSION})"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):  # a failed one is rolled back as `_open` closes
        conn.executescript("BEGIN;" + MIGRATIONS[version - 1] + f"; PRAGMA user_version={version}; COMMIT;")


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> StatementResult:
    cursor = conn.execute(sql, params)
    return StatementResult(cursor.fetchall(), cursor.rowcount)


def _apply_transaction(conn: sqlite3.Connection, statements: Statements) -> int:
    """BEGIN, the statements, COMMIT (ROLLBACK on any error); the last statement's row count."""
    conn.execute("BEGIN")
    try:
        cursor = None
        for sql, params in statements:
            cursor = conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cursor.rowcount if cursor is not None else 0


def _run_in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _probe_write(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
