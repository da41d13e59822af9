"""Conversation leases on PostgreSQL: at most one live instance owns a conversation, and every write of its turns is
fenced by the token it was granted (`PostgresStore._fence_*`). Expiry is judged by the database's clock only.

Why leases and not advisory locks: an advisory lock lives as long as one server session, so it ties ownership to a
connection (not to a pooled store), is only freed when the server notices the TCP session is gone (minutes after a
network loss), and fences nothing: a cut-off instance that reconnects could write again. A lease row expires at
a time every instance agrees on, and its token makes a stale owner's late writes fail (`LeaseLost`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.postgres import INBOX_CHANNEL, Connection, PostgresStore

NOW = "extract(epoch from clock_timestamp())"


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat found: the conversations still held, and those lost to another instance."""

    held: frozenset[str]
    lost: frozenset[str]


class Leases:
    """The lease operations of one instance (`store.owner`) on its store; tokens are kept in `store.tokens`."""

    def __init__(self, store: PostgresStore, lease_seconds: float) -> None:
        if store.owner is None:
            raise ValueError("leases need a store opened with an owner (this instance's id)")
        self.store = store
        self.owner: str = store.owner
        self.lease_seconds = lease_seconds
        self._listener: tuple[Connection, Callable[..., None]] | None = None

    async def acquire(self, conversation: str, *, steal: bool = False) -> bool:
        """Own the conversation if nobody live does (or always, with `steal`: an admin action taking it over; the
        old owner's writes then fail on the new token). Keeps the token when this instance owns it already."""
        takeover = "TRUE" if steal else f"leases.owner = $2 OR leases.expires_at < {NOW}"
        row = await self.store._fetchrow(
            f"INSERT INTO leases(conversation, owner, token, expires_at) VALUES ($1, $2, 1, {NOW} + $3)"
            " ON CONFLICT (conversation) DO UPDATE SET owner = $2, expires_at = EXCLUDED.expires_at,"
            "  token = CASE WHEN leases.owner = $2 THEN leases.token ELSE leases.token + 1 END"
            f" WHERE {takeover} RETURNING token",
            conversation, self.owner, self.lease_seconds)
        if row is None:
            self.store.tokens.pop(conversation, None)
            return False
        self.store.tokens[conversation] = int(row["token"])
        return True

    async def renew(self) -> Renewal:
        """Heartbeat: extend every lease this instance holds, and learn which it has lost."""
        # Only leases granted before the renewal started can be judged: one acquired meanwhile may be missing from
        # the rows although it is ours.
        before = dict(self.store.tokens)
        rows = await self.store._fetch(
            f"UPDATE leases SET expires_at = {NOW} + $2 WHERE owner = $1 RETURNING conversation, token",
            self.owner, self.lease_seconds)
        current = {str(r["conversation"]): int(r["token"]) for r in rows}
        lost = frozenset(c for c, t in before.items() if current.get(c) != t and self.store.tokens.get(c) == t)
        for conversation in lost:
            self.store.tokens.pop(conversation, None)
        return Renewal(held=frozenset(self.store.tokens), lost=lost)

    async def release(self, conversation: str) -> None:
        token = self.store.tokens.pop(conversation, None)
        if token is not None:
            await self.store._execute(
                "DELETE FROM leases WHERE conversation = $1 AND owner = $2 AND token = $3",
                conversation, self.owner, token)

    async def release_idle(self, candidates: list[str]) -> list[str]:
        """Give back those of `candidates` (held here, no worker running) that have no pending message and no
        unfinished turn, so heartbeats renew only conversations with work; the ones released."""
        if not candidates:
            return []
        rows = await self.store._fetch(
            "DELETE FROM leases l WHERE l.owner = $1 AND l.conversation = ANY($2::text[])"
            " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.conversation = l.conversation AND i.state = 'pending')"
            " AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.conversation = l.conversation AND t.state <> 'delivered')"
            " RETURNING conversation", self.owner, candidates)
        released = [str(r["conversation"]) for r in rows]
        for conversation in released:
            self.store.tokens.pop(conversation, None)
        return released

    def forget(self, conversation: str) -> None:
        """A write found the lease gone or taken: the token is no use any more."""
        self.store.tokens.pop(conversation, None)

    async def release_all(self) -> None:
        """A clean stop: every conversation is free for another instance at once, not after the lease runs out."""
        self.store.tokens.clear()
        await self.store._execute("DELETE FROM leases WHERE owner = $1", self.owner)

    async def claimable_work(self) -> list[str]:
        """Conversations with a pending message or an unfinished turn and no live owner (a dead instance's, or new
        ones whose instance died before taking them), and this instance's own with a pending message (in case a
        notification was missed)."""
        rows = await self.store._fetch(
            "SELECT w.conversation FROM ("
            " SELECT DISTINCT conversation FROM inbox WHERE state = 'pending'"
            " UNION SELECT conversation FROM turns WHERE state <> 'delivered') w"
            " WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.conversation = w.conversation"
            f"  AND l.expires_at >= {NOW})"
            " UNION SELECT DISTINCT i.conversation FROM inbox i JOIN leases l ON l.conversation = i.conversation"
            f"  AND l.owner = $1 WHERE i.state = 'pending'", self.owner)
        return [str(r["conversation"]) for r in rows]

    async def owner_of(self, conversation: str) -> str | None:
        """The live owner of the conversation, if any."""
        row = await self.store._fetchrow(
            f"SELECT owner FROM leases WHERE conversation = $1 AND expires_at >= {NOW}", conversation)
        return str(row["owner"]) if row else None

    async def listen(self, on_message: Callable[[str], None]) -> None:
        """Call `on_message(conversation)` whenever any instance stores a message (PostgreSQL NOTIFY). A missed
        notification (the listening connection dropped) is caught up by the next `claimable_work`."""

        def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            on_message(str(payload))

        conn = await self.store.pool.acquire()
        await conn.add_listener(INBOX_CHANNEL, notified)
        self._listener = (conn, notified)

    async def unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            conn, callback = listener
            try:
                await conn.remove_listener(INBOX_CHANNEL, callback)
            finally:
                await self.store.pool.release(conn)
