"""Handoff state in SQLite: which assistant holds a conversation's main thread, its key/value state, every transfer
(keyed by the turn and call that made it, so each is applied exactly once) and which assistant answered each turn.

Everything is per conversation *generation*: a reset starts a new generation, so it returns the conversation to the
team's entry assistant with an empty state without touching these rows. Each write is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from storage.base import LeaseLost, StoreError

if TYPE_CHECKING:
    from storage.sqlite_thread import ConnectionThread

Applied = Literal["applied", "repeated", "over_limit"]


@dataclass(frozen=True, slots=True)
class HandoffState:
    """A conversation generation's active assistant (None: the team's entry) and state, with the last transfer's
    reason and notes for the assistant that took over."""

    active: str | None = None
    state: Mapping[str, str] = field(default_factory=dict)
    from_agent: str | None = None
    reason: str = ""
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Transfer:
    """One switch of the active assistant: by a model's `transfer_to_*` call (turn and call id) or by an admin."""

    conversation: str
    generation: int
    from_agent: str
    to_agent: str
    reason: str = ""
    notes: str = ""
    state: Mapping[str, str | None] = field(default_factory=dict)  # merged into the state; None deletes a key
    turn_id: str | None = None
    call_id: str = ""
    source: Literal["model", "admin"] = "model"


class HandoffStore(Protocol):
    async def handoff_state(self, conversation: str, generation: int) -> HandoffState: ...

    async def apply_transfer(self, transfer: Transfer, max_per_turn: int) -> Applied:
        """Switch the active assistant and merge the state, once per (turn, call): a second call with the same ids
        changes nothing and says "repeated"; beyond `max_per_turn` transfers in the turn nothing changes."""
        ...

    async def transfers(self, conversation: str, generation: int) -> list[Transfer]: ...

    async def record_turn_agent(self, turn_id: str, conversation: str, generation: int, agent: str) -> None: ...

    async def turn_agents(self, conversation: str, generation: int) -> dict[str, str]:
        """turn id -> the assistant that answered it."""
        ...


class SQLiteHandoffs:
    """`HandoffStore` for `SQLiteStore` (mixed in; uses its connection thread)."""

    if TYPE_CHECKING:
        @property
        def _opened(self) -> ConnectionThread: ...

    async def handoff_state(self, conversation: str, generation: int) -> HandoffState:
        rows = await self._handoff_call(_read_state, conversation, generation)
        return rows

    async def apply_transfer(self, transfer: Transfer, max_per_turn: int) -> Applied:
        result: Applied = await self._handoff_call(_apply, transfer, max_per_turn)
        return result

    async def transfers(self, conversation: str, generation: int) -> list[Transfer]:
        found: list[Transfer] = await self._handoff_call(_transfers, conversation, generation)
        return found

    async def record_turn_agent(self, turn_id: str, conversation: str, generation: int, agent: str) -> None:
        await self._handoff_call(_turn_agent, turn_id, conversation, generation, agent)

    async def turn_agents(self, conversation: str, generation: int) -> dict[str, str]:
        found: dict[str, str] = await self._handoff_call(_turn_agents, conversation, generation)
        return found

    async def _handoff_call(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._opened.run(fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed ({exc}) while recording a handoff") from exc


def _read_state(conn: sqlite3.Connection, conversation: str, generation: int) -> HandoffState:
    row = conn.execute(
        "SELECT active, state, from_agent, reason, notes FROM handoff_state WHERE conversation=? AND generation=?",
        (conversation, generation),
    ).fetchone()
    if row is None:
        return HandoffState()
    return HandoffState(row[0], json.loads(row[1]), row[2], row[3], row[4])


def _apply(conn: sqlite3.Connection, t: Transfer, max_per_turn: int) -> Applied:
    call_id = t.call_id or "admin_" + uuid.uuid4().hex[:16]
    if t.turn_id is not None:
        seen = conn.execute("SELECT 1 FROM handoffs WHERE turn_id=? AND call_id=?", (t.turn_id, call_id)).fetchone()
        if seen:
            return "repeated"
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM handoffs WHERE turn_id=? AND source='model'", (t.turn_id,)
        ).fetchone()
        if t.source == "model" and count >= max_per_turn:
            return "over_limit"
    current = _read_state(conn, t.conversation, t.generation)
    state = dict(current.state)
    for key, value in t.state.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    now = time.time()
    conn.execute(
        "INSERT INTO handoffs(conversation, generation, turn_id, call_id, from_agent, to_agent, reason, notes, state,"
        " source, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (t.conversation, t.generation, t.turn_id, call_id, t.from_agent, t.to_agent, t.reason, t.notes,
         json.dumps(dict(t.state)), t.source, now),
    )
    conn.execute(
        "INSERT INTO handoff_state(conversation, generation, active, state, from_agent, reason, notes, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(conversation, generation) DO UPDATE SET active=excluded.active,"
        " state=excluded.state, from_agent=excluded.from_agent, reason=excluded.reason, notes=excluded.notes,"
        " updated_at=excluded.updated_at",
        (t.conversation, t.generation, t.to_agent, json.dumps(state, ensure_ascii=False), t.from_agent, t.reason,
         t.notes, now),
    )
    return "applied"


def _transfers(conn: sqlite3.Connection, conversation: str, generation: int) -> list[Transfer]:
    rows = conn.execute(
        "SELECT from_agent, to_agent, reason, notes, state, turn_id, call_id, source FROM handoffs"
        " WHERE conversation=? AND generation=? ORDER BY id",
        (conversation, generation),
    ).fetchall()
    return [Transfer(conversation, generation, r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])
            for r in rows]


def _turn_agent(conn: sqlite3.Connection, turn_id: str, conversation: str, generation: int, agent: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO turn_agents(turn_id, conversation, generation, agent) VALUES (?,?,?,?)",
        (turn_id, conversation, generation, agent),
    )


def _turn_agents(conn: sqlite3.Connection, conversation: str, generation: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT turn_id, agent FROM turn_agents WHERE conversation=? AND generation=?", (conversation, generation)
    ).fetchall()
    return {r[0]: r[1] for r in rows}


class PostgresHandoffs:
    """`HandoffStore` for `PostgresStore` (mixed in): the same rows as SQLite's, a transfer in one transaction that
    locks the conversation's state row (and holds the conversation's lease when several instances share it)."""

    if TYPE_CHECKING:
        owner: str | None
        tokens: dict[str, int]

        async def _op(self, fn: Any, what: str = "write") -> Any: ...

        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

        async def _execute(self, sql: str, *args: Any) -> str: ...

    async def handoff_state(self, conversation: str, generation: int) -> HandoffState:
        rows = await self._fetch(
            "SELECT active, state, from_agent, reason, notes FROM handoff_state WHERE conversation=$1"
            " AND generation=$2", conversation, generation)
        return _pg_state(rows[0]) if rows else HandoffState()

    async def apply_transfer(self, transfer: Transfer, max_per_turn: int) -> Applied:
        fence = None if self.owner is None else (self.owner, self.tokens.get(transfer.conversation, -1))

        async def run(conn: Any) -> Applied:
            async with conn.transaction():
                return await _pg_apply(conn, transfer, max_per_turn, fence)

        result: Applied = await self._op(run)
        return result

    async def transfers(self, conversation: str, generation: int) -> list[Transfer]:
        rows = await self._fetch(
            "SELECT from_agent, to_agent, reason, notes, state, turn_id, call_id, source FROM handoffs"
            " WHERE conversation=$1 AND generation=$2 ORDER BY id", conversation, generation)
        return [Transfer(conversation, generation, r["from_agent"], r["to_agent"], r["reason"], r["notes"],
                         json.loads(r["state"]), r["turn_id"], r["call_id"], r["source"]) for r in rows]

    async def record_turn_agent(self, turn_id: str, conversation: str, generation: int, agent: str) -> None:
        await self._execute(
            "INSERT INTO turn_agents(turn_id, conversation, generation, agent) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (turn_id) DO UPDATE SET agent=EXCLUDED.agent", turn_id, conversation, generation, agent)

    async def turn_agents(self, conversation: str, generation: int) -> dict[str, str]:
        rows = await self._fetch(
            "SELECT turn_id, agent FROM turn_agents WHERE conversation=$1 AND generation=$2", conversation, generation)
        return {r["turn_id"]: r["agent"] for r in rows}


def _pg_state(row: Any) -> HandoffState:
    return HandoffState(row["active"] or None, json.loads(row["state"]), row["from_agent"], row["reason"], row["notes"])


async def _pg_apply(conn: Any, t: Transfer, max_per_turn: int, fence: tuple[str, int] | None) -> Applied:
    if fence is not None:
        held = await conn.fetchval("SELECT 1 FROM leases WHERE conversation=$1 AND owner=$2 AND token=$3 FOR SHARE",
                                   t.conversation, *fence)
        if held is None:
            raise LeaseLost(f"this instance no longer owns conversation {t.conversation}")
    # the state row, locked: concurrent transfers of one conversation apply one after the other
    await conn.execute(
        "INSERT INTO handoff_state(conversation, generation, active, state, updated_at) VALUES ($1,$2,'','{}',0)"
        " ON CONFLICT (conversation, generation) DO NOTHING", t.conversation, t.generation)
    row = await conn.fetchrow(
        "SELECT active, state, from_agent, reason, notes FROM handoff_state WHERE conversation=$1 AND generation=$2"
        " FOR UPDATE", t.conversation, t.generation)
    call_id = t.call_id or "admin_" + uuid.uuid4().hex[:16]
    if t.turn_id is not None:
        if await conn.fetchval("SELECT 1 FROM handoffs WHERE turn_id=$1 AND call_id=$2", t.turn_id, call_id):
            return "repeated"
        count = await conn.fetchval("SELECT count(*) FROM handoffs WHERE turn_id=$1 AND source='model'", t.turn_id)
        if t.source == "model" and count >= max_per_turn:
            return "over_limit"
    state = dict(json.loads(row["state"]))
    for key, value in t.state.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    now = time.time()
    await conn.execute(
        "INSERT INTO handoffs(conversation, generation, turn_id, call_id, from_agent, to_agent, reason, notes, state,"
        " source, at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        t.conversation, t.generation, t.turn_id, call_id, t.from_agent, t.to_agent, _clean(t.reason),
        _clean(t.notes), json.dumps(dict(t.state), ensure_ascii=False).replace("\\u0000", "\ufffd"), t.source, now)
    await conn.execute(
        "UPDATE handoff_state SET active=$3, state=$4, from_agent=$5, reason=$6, notes=$7, updated_at=$8"
        " WHERE conversation=$1 AND generation=$2",
        t.conversation, t.generation, t.to_agent, json.dumps(state, ensure_ascii=False).replace("\\u0000", "\ufffd"),
        t.from_agent, _clean(t.reason), _clean(t.notes), now)
    return "applied"


def _clean(text: str) -> str:
    """PostgreSQL text holds no NUL character."""
    return text.replace("\x00", "\ufffd")
