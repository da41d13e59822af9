"""Which conversations this instance may work on. One instance (SQLite, or PostgreSQL without peers) owns them all;
several on one PostgreSQL database share them through leases (`storage.leases`): at most one live owner each.

`LeasedOwnership` keeps its leases alive with a heartbeat every third of `lease_seconds`, takes over conversations
whose owner stopped renewing (a killed or cut-off instance) and resumes their turns as a restart does, wakes the
owner's worker when a message for it was stored by any instance (NOTIFY, with the heartbeat's scan as a catch-up),
stops the local worker of a conversation it lost, and gives every lease back on a clean stop. Whatever takes a
conversation from another instance (the heartbeat, a worker for a new message, an admin action's door) has its
unfinished turn resumed before anything new.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from storage.base import StoreError
from storage.leases import Leases

log = logging.getLogger("switchboard.ownership")

Wake = Callable[[str, bool], None]  # (conversation, newly owned: resume its unfinished turn first)
Lost = Callable[[str], Awaitable[None]]  # stop the local worker of a conversation now owned elsewhere
Busy = Callable[[str], bool]  # a local worker or admin action is on the conversation now
HEARTBEATS_PER_LEASE = 3


class Claim(enum.Enum):
    """What `Ownership.claim` found."""

    ELSEWHERE = "elsewhere"  # another live instance owns the conversation
    HELD = "held"  # this instance owned it already
    TAKEN = "taken"  # this instance just took it: another may have left a turn unfinished there, resume it first


class Ownership:
    """This instance owns every conversation: one process per database."""

    async def start(self, wake: Wake, lost: Lost, busy: Busy) -> None:
        return None

    def forget(self, conversation: str) -> None:
        """A write found that this instance no longer holds the conversation."""
        return None

    async def claim(self, conversation: str) -> Claim:
        """Whether this instance may work on the conversation now, taking it if nobody live owns it."""
        return Claim.HELD

    async def take(self, conversation: str) -> Claim:
        """An admin action is about to change the conversation here: make this instance its owner."""
        return Claim.HELD

    async def stop(self) -> None:
        return None


class LeasedOwnership(Ownership):
    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._wake: Wake | None = None
        self._lost: Lost | None = None
        self._busy: Busy = lambda _conversation: True
        self._heartbeat: asyncio.Task[None] | None = None
        self.takeovers = 0  # conversations taken over from an instance that stopped renewing (metrics, benchmarks)

    @property
    def interval(self) -> float:
        return self.leases.lease_seconds / HEARTBEATS_PER_LEASE

    async def start(self, wake: Wake, lost: Lost, busy: Busy) -> None:
        self._wake, self._lost, self._busy = wake, lost, busy
        await self.leases.listen(self._notified)
        await self.beat()  # take over what is waiting before the first message arrives
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="switchboard-lease-heartbeat")

    async def claim(self, conversation: str) -> Claim:
        if conversation in self.leases.store.tokens:
            return Claim.HELD
        return Claim.TAKEN if await self.leases.acquire(conversation) else Claim.ELSEWHERE

    async def take(self, conversation: str) -> Claim:
        held = conversation in self.leases.store.tokens
        await self.leases.acquire(conversation, steal=True)
        return Claim.HELD if held else Claim.TAKEN

    def forget(self, conversation: str) -> None:
        self.leases.forget(conversation)

    async def stop(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        try:
            await self.leases.unlisten()
            await self.leases.release_all()
        except StoreError as exc:  # the database is away: the leases run out by themselves
            log.warning("could not give back this instance's leases (%s); they expire in %.0fs", exc,
                        self.leases.lease_seconds)

    async def beat(self) -> None:
        """Give back idle leases, renew the rest, stop what was lost, take what nobody live owns."""
        assert self._wake is not None and self._lost is not None
        await self.leases.release_idle([c for c in self.leases.store.tokens if not self._busy(c)])
        renewal = await self.leases.renew()
        for conversation in renewal.lost:
            log.warning("conversation %s is now owned by another instance; stopping its work here", conversation)
            await self._lost(conversation)
        for conversation in await self.leases.claimable_work():
            claim = await self.claim(conversation)
            if claim is Claim.TAKEN:
                self.takeovers += 1
            if claim is not Claim.ELSEWHERE:
                self._wake(conversation, claim is Claim.TAKEN)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: leases run out, writes stay fenced; try again
                log.warning("lease heartbeat failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc,
                            self.interval)

    def _notified(self, conversation: str) -> None:
        # Only the owner acts: a conversation nobody owns is taken by the instance that stored the message (its
        # own kick), or by the next heartbeat if that instance died meanwhile.
        if conversation in self.leases.store.tokens and self._wake is not None:
            self._wake(conversation, False)


class LeasedDoors:
    """The mailbox's doors, taking the conversation's lease first: an admin action on any instance stops the
    owner's writes (their token is stale) before it changes anything. A conversation taken from another instance is
    handed to `taken` inside the door (its next worker resumes that instance's unfinished turn first)."""

    def __init__(self, ownership: Ownership, exclusive: Callable[[str], contextlib.AbstractAsyncContextManager[None]],
                 taken: Callable[[str], None]):
        self._ownership = ownership
        self._exclusive = exclusive
        self._taken = taken

    @contextlib.asynccontextmanager
    async def exclusive(self, conversation: str) -> AsyncIterator[None]:
        claim = await self._ownership.take(conversation)
        async with self._exclusive(conversation):
            if claim is Claim.TAKEN:
                self._taken(conversation)
            yield
