"""The engine's front door: `Bot`, which builds the engine's parts and is all that the wiring and adapters call.

    bot = Bot.from_config(load_config())          # or Bot(team, store, backend) in tests
    bot.add_surface(my_surface)                   # one per platform (see bot.types.Surface)
    await bot.start()                             # opens the store, resumes every unfinished turn
    await bot.accept(Inbound(...))                # fast: dedupe + persist + wake the conversation's worker
    ...
    await bot.stop()

`accept` persists a message before it returns, and `command`'s admin actions change a conversation only inside its
mailbox door; turns are answered by `bot.worker`, delivered by `bot.delivery` and serialised per conversation by
`bot.mailbox`, so each acknowledged message is answered exactly once (or told plainly why not).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Set

from bot.access import Policy
from bot.admin_socket import AdminSocket, InstanceLock, socket_path
from bot.backends.base import Backend
from bot.backends.providers import make_backend
from bot.commands import CommandHandler, ConversationControl
from bot.config import ConfigError, TeamConfig, load_config
from bot.delivery import Delivery
from bot.mailbox import Mailbox
from bot.metrics import Metrics
from bot.orchestrator import Orchestrator
from bot.ownership import Claim, LeasedDoors, LeasedOwnership, Ownership
from bot.supervisor import Supervisor
from bot.types import Accepted, CommandContext, CommandResult, Inbound, InvalidInbound, Started, Surface
from bot.worker import INTERNAL_ERROR_TEXT, ConversationWorker, TurnStats
from storage.base import InboxMessage, LeaseLost, Store, StoreError
from storage.select import is_postgres, store_for

__all__ = ["INTERNAL_ERROR_TEXT", "MAX_MESSAGE_CHARS", "Bot", "make_backend"]

log = logging.getLogger("switchboard.engine")

MAX_MESSAGE_CHARS = 32_000
STOP_GRACE_SECONDS = 5.0
STOP_UNANSWERED_SECONDS = 5.0  # see `Bot.stop`


class Bot:
    """Implements `bot.types.BotLike` (adapters) plus the lifecycle the wiring drives (`start`, `stop`, `idle`)."""

    def __init__(self, team: TeamConfig, store: Store, backend: Backend) -> None:
        self.team = team
        self.store = store
        self.backend = backend
        bind_store = getattr(backend, "bind_store", None)  # a backend that caches provider objects in the store
        if bind_store is not None:
            bind_store(store)
        self.metrics = Metrics()
        self.policy = Policy(team, store)
        self.supervisor = Supervisor(backend, store, team.limits, self.metrics)
        self.delivery = Delivery(store, self.metrics, team.limits)
        self.worker = ConversationWorker(store, Orchestrator(team, backend, self.supervisor), self.delivery,
                                         self.metrics, charge=self.policy.charge)
        self.mailbox = Mailbox(self._process, team.limits.backoff_base, team.limits.backoff_max)
        self.ownership = _ownership(team, store)
        doors = LeasedDoors(self.ownership, self.mailbox.exclusive, taken=self.resume_later)
        self.commands = CommandHandler(
            ConversationControl(team=team, store=store, doors=doors, runs=backend, resume_later=self.resume_later,
                                policy=self.policy, reload=self.reload)
        )
        self._lock: InstanceLock | None = None
        self._admin: AdminSocket | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._showing: set[asyncio.Task[None]] = set()  # indicators being shown for just-accepted messages

    @classmethod
    def from_config(cls, team: TeamConfig) -> Bot:
        owner = None
        if is_postgres(team.db_path):  # several instances may share it: this one's id in conversation leases
            owner = team.storage.instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        store = store_for(team.db_path, owner=owner, pool_size=team.storage.pool_size)
        return cls(team, store, make_backend(team))

    @property
    def shared_database(self) -> bool:
        """Several instances may share this bot's database (PostgreSQL): no instance lock, no admin socket."""
        return isinstance(self.ownership, LeasedOwnership)

    # ---- views of the parts, for the wiring, tests and benchmarks ----

    @property
    def orchestrator(self) -> Orchestrator:
        return self.worker.orchestrator

    @orchestrator.setter
    def orchestrator(self, orchestrator: Orchestrator) -> None:  # tests swap in a scripted one
        self.worker.orchestrator = orchestrator

    @property
    def surfaces(self) -> dict[str, Surface]:
        return self.delivery.surfaces

    @property
    def stats(self) -> TurnStats:
        return self.worker.stats

    @property
    def _may_resume(self) -> Set[str]:  # read by benchmarks/phases.py; `worker.resuming` is the public name
        return self.worker.resuming

    # ---- lifecycle ----

    def add_surface(self, surface: Surface) -> None:
        self.delivery.add_surface(surface)
        for conversation in self.worker.surface_added(surface.platform):
            self.mailbox.kick(conversation)

    async def start(self) -> None:
        """Open the store (one process per database file), resume interrupted work, open the admin socket. On a
        shared database: take over the conversations nobody live owns, and keep the leases of those it owns."""
        if self.shared_database:
            await self.store.open()
            await self.backend.open()
            await self.ownership.start(self._wake, self._lost, self.mailbox.busy)
            self._start_pruner()
            return
        if self.team.db_path != ":memory:":
            self._lock = InstanceLock(self.team.db_path)
            self._lock.acquire()
        await self.store.open()
        await self.backend.open()
        if self._lock is not None:
            self._admin = AdminSocket(self.command, socket_path(self.team.db_path))
            try:
                await self._admin.start()
            except OSError as exc:  # e.g. a path longer than a Unix socket allows
                log.warning("no admin socket (%s): CLI admin commands work only while the bot is stopped", exc)
                self._admin = None
        for conversation in {t.conversation for t in await self.store.unfinished_turns()}:
            self.resume_later(conversation)
        for conversation in await self.store.conversations_with_pending():
            self.mailbox.kick(conversation)
        self._start_pruner()

    async def stop(self, grace: float = STOP_GRACE_SECONDS, unanswered: float = STOP_UNANSWERED_SECONDS) -> None:
        """Let in-flight work finish for up to `grace` seconds, then cancel it (`cancel_work`: it resumes on the next
        start)."""
        try:
            async with asyncio.timeout(grace):
                await self.mailbox.idle()
        except TimeoutError:
            log.info("stopping with turns in flight; they resume on the next start")
        await self.cancel_work(unanswered)
        showing, self._showing = list(self._showing), set()
        for task in showing:
            task.cancel()
        await asyncio.gather(*showing, return_exceptions=True)
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        await self.ownership.stop()  # leases given back: other instances take over at once
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        await self.backend.close()
        await self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def cancel_work(self, unanswered: float = STOP_UNANSWERED_SECONDS) -> None:
        """Cancel every worker; no new one starts. A worker cancelled while it sends a create waits for the answer
        (the run must be on record); after `unanswered` seconds without one, the provider connections are closed, as
        a crash would close them, and the turn resumes on the next start."""
        closing = asyncio.ensure_future(self.mailbox.close())
        done, _ = await asyncio.wait([closing], timeout=unanswered)
        if not done:
            log.warning("a provider request was still unanswered %g s after stopping; closing the connections (its "
                        "turn resumes on the next start, as after a crash)", unanswered)
            await self.backend.close()
        await closing

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bot]:
        """`async with bot.running():` start, and stop however the block ends."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def idle(self) -> None:
        """Wait until no conversation has work it can do now (turns waiting for a surface do not count)."""
        await self.mailbox.idle()

    # ---- inbound ----

    async def accept(self, inbound: Inbound) -> Accepted:
        """Persist the message and wake its conversation. Raises `InvalidInbound` (nothing stored) for bad input."""
        text = inbound.text.strip()
        if not text:
            raise InvalidInbound("Your message was empty, so there is nothing to answer.")
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidInbound(
                f"Your message is {len(text):,} characters long; the limit is {MAX_MESSAGE_CHARS:,}. "
                "Please shorten it or attach the text as a file."
            )
        if not inbound.event_id or not inbound.conversation:
            raise InvalidInbound("The message had no event id or conversation; the adapter must set both.")
        message = InboxMessage(
            event_id=inbound.event_id,
            conversation=inbound.conversation,
            platform=inbound.platform,
            channel=inbound.channel,
            user=inbound.user,
            text=text,
            route=dict(inbound.route),
            received_at=time.time(),
        )
        # raises Refused (audited, nothing stored) for the lists, rates and budgets
        fresh = await self.policy.admit(inbound, message)
        busy = self.mailbox.busy(inbound.conversation)
        if fresh:
            self.metrics.accepted.labels(inbound.platform).inc()
            if (not busy or self.worker.reads_inbox_next(inbound.conversation)) and not self.shared_database:
                self._show_started(message)
            self.mailbox.kick(inbound.conversation)
        else:
            self.metrics.duplicates.labels(inbound.platform).inc()
        return Accepted(inbound.event_id, inbound.conversation, duplicate=not fresh, queued_behind_turn=busy)

    def _show_started(self, message: InboxMessage) -> None:
        """The thinking indicator of the turn `message` starts, shown now rather than when the worker gets to it
        (under load that can be seconds later). In the background: the caller (an event listener) returns at once.
        Only where this instance surely owns the conversation; with peers (PostgreSQL) its owner shows it."""
        ref = self.worker.announce(message)
        if ref is None:
            return
        task = asyncio.create_task(self.delivery.progress(ref, Started()), name=f"switchboard-started-{ref.id}")
        self._showing.add(task)
        task.add_done_callback(self._showing.discard)

    async def command(self, ctx: CommandContext, text: str) -> CommandResult:
        return await self.commands.handle(ctx, text)

    async def reload(self) -> str:
        """Re-read the team file (`switchboard reload`, SIGHUP) and apply its access lists, admins, budgets and
        prices at once. An invalid file raises `ConfigError` and changes nothing; other changes need a restart."""
        if not self.team.source:
            raise ConfigError("this bot was not started from a team file, so there is nothing to reload")
        new = await asyncio.to_thread(load_config, self.team.source)
        team = dataclasses.replace(self.team, platforms=new.platforms, budgets=new.budgets, prices=new.prices)
        self.team = self.policy.team = team
        ignored = [name for name in ("proxy", "subs", "backend", "limits", "db_path", "base_url", "ops")
                   if getattr(new, name) != getattr(team, name)]
        log.info("reloaded %s", self.team.source)
        note = f"; changes to {', '.join(ignored)} need a restart" if ignored else ""
        return f"Reloaded {self.team.source}: access lists, admins, budgets and prices applied{note}."

    async def has_conversation(self, conversation: str) -> bool:
        return await self.store.get_conversation(conversation) is not None

    def _start_pruner(self) -> None:
        if self.team.storage.prune_every_hours > 0:
            self._pruner = asyncio.create_task(self._prune_forever(), name="switchboard-prune")

    async def _prune_forever(self) -> None:
        """Retention (`[retention]`), every `prune_every_hours`; `switchboard prune` runs the same now."""
        while True:
            await asyncio.sleep(self.team.storage.prune_every_hours * 3600)
            try:
                counts = await self.store.prune(self.team.retention)
                log.info("pruned %d old row(s): %s", counts.total, counts)
            except StoreError as exc:
                log.warning("prune failed (%s); trying again in %g h", exc, self.team.storage.prune_every_hours)

    async def _process(self, conversation: str) -> bool:
        """The mailbox's unit of work, only for a conversation this instance owns."""
        claim = await self.ownership.claim(conversation)
        if claim is Claim.ELSEWHERE:
            return False
        if claim is Claim.TAKEN:  # its last owner may have died mid-turn: that turn goes before any new message
            self.worker.resume_first(conversation)
        try:
            return await self.worker.process(conversation)
        except LeaseLost as exc:
            log.warning("stopped work on %s: %s", conversation, exc)
            self.ownership.forget(conversation)
            if await self.ownership.claim(conversation) is not Claim.ELSEWHERE:  # only given back as idle: retake
                self.resume_later(conversation)
            return False

    def _wake(self, conversation: str, newly_owned: bool) -> None:
        if newly_owned:
            self.resume_later(conversation)
        else:
            self.mailbox.kick(conversation)

    async def _lost(self, conversation: str) -> None:
        async with self.mailbox.exclusive(conversation):  # cancels its worker; the next owner resumes the turn
            pass

    def resume_later(self, conversation: str) -> None:
        """Its records changed while its worker was stopped (an admin action inside `mailbox.exclusive`, a restart):
        the conversation's next worker looks for an unfinished turn before new messages."""
        self.worker.resume_first(conversation)
        self.mailbox.kick(conversation)


def _ownership(team: TeamConfig, store: Store) -> Ownership:
    owner = getattr(store, "owner", None)
    if owner is None:
        return Ownership()
    from storage.leases import Leases
    from storage.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return LeasedOwnership(Leases(store, team.storage.lease_seconds))
