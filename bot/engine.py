"""The engine's front door: `Bot`.

    bot = Bot.from_config(load_config())          # or Bot(team, store, backend) in tests
    bot.add_surface(my_surface)                   # one per platform (see bot.types.Surface)
    await bot.start()                             # opens the store, resumes every unfinished turn
    await bot.accept(Inbound(...))                # fast: dedupe + persist + wake the conversation's worker
    ...
    await bot.stop()

A turn goes received -> running (<-> awaiting_tools) -> replied -> delivering -> delivered. The reply is recorded
before it is posted and the surface is asked whether it was already posted before any re-post after a crash, so
each acknowledged message is answered exactly once (or told plainly why not).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2
import openai

from bot.admin_socket import AdminSocket, InstanceLock, socket_path
from bot.backends.base import Backend, BackendError
from bot.commands import CommandHandler
from bot.config import TeamConfig
from bot.mailbox import Mailbox
from bot.metrics import Metrics
from bot.orchestrator import MAIN_THREAD, Orchestrator, TurnContext
from bot.supervisor import RunFailed, Supervisor
from bot.types import (
    Accepted,
    CommandContext,
    CommandResult,
    Done,
    Failed,
    Inbound,
    InvalidInbound,
    Progress,
    Reply,
    Started,
    Surface,
    TurnRef,
)
from storage.base import InboxMessage, Store, StoreError, TurnRecord, TurnUpdate
from storage.sqlite import SQLiteStore

log = logging.getLogger("switchboard.engine")

MAX_MESSAGE_CHARS = 32_000
STOP_GRACE_SECONDS = 5.0
PROVIDER_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)
INTERNAL_ERROR_TEXT = "Something went wrong on our side while answering; the error was logged for the operator."
INCOMPLETE_NOTE = "\n\n_(This answer was cut short by the AI provider's limits.)_"


@dataclass(slots=True)
class TurnStats:
    """What the last turns did, for logs, metrics and benchmarks."""

    turns: int = 0
    answered: int = 0
    failed: int = 0
    retries: int = 0


def make_backend(team: TeamConfig) -> Backend:
    client = openai.AsyncOpenAI(
        api_key=team.api_key or "missing-key",
        base_url=team.base_url,
        max_retries=0,  # the supervisor retries, honouring Retry-After and never duplicating a background run
        # The SDK's aiohttp transport: about half the CPU per request of the default one (benchmarks/).
        http_client=openai.DefaultAioHttpClient(timeout=PROVIDER_TIMEOUT),
    )
    if team.backend == "assistants":
        from bot.backends.assistants import AssistantsBackend

        return AssistantsBackend(client, team)
    from bot.backends.responses import ResponsesBackend

    return ResponsesBackend(client)


class Bot:
    def __init__(self, team: TeamConfig, store: Store, backend: Backend) -> None:
        self.team = team
        self.store = store
        self.backend = backend
        bind_store = getattr(backend, "bind_store", None)  # a backend that caches provider objects in the store
        if bind_store is not None:
            bind_store(store)
        self.metrics = Metrics()
        self.supervisor = Supervisor(backend, store, team.limits, self.metrics)
        self.orchestrator = Orchestrator(team, backend, self.supervisor)
        self.mailbox = Mailbox(self._process)
        self.commands = CommandHandler(self)
        self.surfaces: dict[str, Surface] = {}
        self.stats = TurnStats()
        self._started = False
        # Conversations that may hold a turn interrupted before this start; every other conversation's turns are
        # started and finished by its own worker, so the worker need not ask the database first.
        self._may_resume: set[str] = set()
        self._lock: InstanceLock | None = None
        self._admin: AdminSocket | None = None

    @classmethod
    def from_config(cls, team: TeamConfig) -> Bot:
        return cls(team, SQLiteStore(team.db_path), make_backend(team))

    # ---- lifecycle ----

    def add_surface(self, surface: Surface) -> None:
        self.surfaces[surface.platform] = surface

    async def start(self) -> None:
        """Open the store (one process per database file), resume interrupted work, open the admin socket."""
        if self.team.db_path != ":memory:":
            self._lock = InstanceLock(self.team.db_path)
            self._lock.acquire()
        await self.store.open()
        await self.backend.open()
        self._started = True
        if self._lock is not None:
            self._admin = AdminSocket(self, socket_path(self.team.db_path))
            try:
                await self._admin.start()
            except OSError as exc:  # e.g. a path longer than a Unix socket allows
                log.warning("no admin socket (%s): CLI admin commands work only while the bot is stopped", exc)
                self._admin = None
        self._may_resume = {t.conversation for t in await self.store.unfinished_turns()}
        for conversation in self._may_resume:
            self.mailbox.kick(conversation)
        for conversation in await self.store.conversations_with_pending():
            self.mailbox.kick(conversation)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let in-flight work finish for up to `grace` seconds, then cancel it (it resumes on the next start)."""
        try:
            async with asyncio.timeout(grace):
                await self.mailbox.idle()
        except TimeoutError:
            log.info("stopping with turns in flight; they resume on the next start")
        await self.mailbox.close()
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        await self.backend.close()
        await self.store.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._started = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bot]:
        """`async with bot.running():` start, and stop however the block ends."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def idle(self) -> None:
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
        fresh = await self.store.add_inbound(
            InboxMessage(
                event_id=inbound.event_id,
                conversation=inbound.conversation,
                platform=inbound.platform,
                channel=inbound.channel,
                user=inbound.user,
                text=text,
                route=dict(inbound.route),
                received_at=time.time(),
            )
        )
        busy = self.mailbox.busy(inbound.conversation)
        if fresh:
            self.metrics.accepted.labels(inbound.platform).inc()
            self.mailbox.kick(inbound.conversation)
        else:
            self.metrics.duplicates.labels(inbound.platform).inc()
        return Accepted(inbound.event_id, inbound.conversation, duplicate=not fresh, queued_behind_turn=busy)

    async def command(self, ctx: CommandContext, text: str) -> CommandResult:
        return await self.commands.handle(ctx, text)

    # ---- the conversation worker ----

    async def _process(self, conversation: str) -> bool:
        """One unit of work for a conversation: resume its unfinished turn, or start one from its inbox."""
        if conversation in self._may_resume:
            unfinished = await self.store.unfinished_turns(conversation)
            if unfinished:
                turn = unfinished[0]
                await self._drive(turn, await self.store.inbound_for_turn(turn.id), resumed=True)
                return True
            self._may_resume.discard(conversation)
        pending = await self.store.pending_inbound(conversation)
        if not pending:
            return False
        record = await self.store.get_conversation(conversation)
        turn = TurnRecord.new(conversation, record.generation if record else 0)
        await self.store.start_turn(turn, pending, MAIN_THREAD)
        main_thread = record.main_thread if record else None
        try:
            await self._drive(turn, pending, resumed=False, main_thread=main_thread)
        except BaseException:
            self._may_resume.add(conversation)  # interrupted (cancelled, store failure): resume it from the record
            raise
        return True

    def resume_later(self, conversation: str) -> None:
        """An admin action changed its records while its worker was stopped (inside `mailbox.exclusive`): the
        next worker looks at them before new work."""
        self._may_resume.add(conversation)
        self.mailbox.kick(conversation)

    async def _drive(
        self, turn: TurnRecord, messages: list[InboxMessage], resumed: bool, main_thread: str | None = None
    ) -> None:
        ref = self._ref(turn, messages)
        if turn.state in ("received", "running", "awaiting_tools"):
            turn = await self._answer(turn, ref, [m.text for m in messages], resumed, main_thread)
        if turn.state in ("replied", "delivering"):
            await self._deliver(turn, ref, [m.event_id for m in messages], check_first=resumed)

    async def _answer(
        self, turn: TurnRecord, ref: TurnRef, texts: list[str], resumed: bool, main_thread: str | None
    ) -> TurnRecord:
        started = time.monotonic()

        async def emit(event: Progress) -> None:
            await self._emit(ref, event)

        await emit(Started())
        ctx = TurnContext(turn=turn, emit=emit, fresh=not resumed, main_thread=main_thread)
        kind, text = "answer", ""
        try:
            outcome = await self.orchestrator.run_turn(ctx, texts)
            text = outcome.text.strip() or "(The assistant returned an empty answer.)"
            if outcome.incomplete:
                text += INCOMPLETE_NOTE
            await emit(Done(text=text, usage=outcome.usage, incomplete=outcome.incomplete))
        except RunFailed as exc:
            kind, text = "failure", exc.user_text
            log.warning("turn %s failed: %s", turn.id, exc.reason)
            await emit(Failed(text))
        except (BackendError, StoreError) as exc:
            kind, text = "failure", INTERNAL_ERROR_TEXT
            log.error("turn %s failed: %s", turn.id, type(exc).__name__)
            await emit(Failed(text))
        except asyncio.CancelledError:
            raise
        except Exception:
            kind, text = "failure", INTERNAL_ERROR_TEXT
            log.exception("turn %s crashed", turn.id)
            await emit(Failed(text))
        elapsed = time.monotonic() - started
        outcome = "failed" if kind == "failure" else "incomplete" if text.endswith(INCOMPLETE_NOTE) else "answered"
        self._count_turn(outcome, elapsed, ctx)
        log.info(
            "turn %s %s in %.0f ms, %d retries, %d input + %d output tokens",
            turn.id, outcome, elapsed * 1000, ctx.retries, ctx.usage.input_tokens, ctx.usage.output_tokens,
            extra={"turn": turn.id, "conversation": turn.conversation, "outcome": outcome,
                   "latency_ms": round(elapsed * 1000), "retries": ctx.retries,
                   "input_tokens": ctx.usage.input_tokens, "output_tokens": ctx.usage.output_tokens},
        )
        # Recorded straight as `delivering` when we are about to post: a crash from here on makes recovery look
        # for the reply on the platform before posting it, which is what exactly-once needs.
        state = "delivering" if ref.platform in self.surfaces else "replied"
        update = TurnUpdate(
            state=state,  # type: ignore[arg-type]
            reply_kind=kind,  # type: ignore[arg-type]
            reply_text=text,
            add_retries=ctx.retries,
            add_input_tokens=ctx.usage.input_tokens,
            add_output_tokens=ctx.usage.output_tokens,
        )
        try:
            await self.store.record_reply(turn, update, MAIN_THREAD)
        except StoreError as exc:
            if state != "delivering":
                raise
            # The database refuses writes (full, read-only): the user still gets this reply now. The turn stays
            # unfinished in the database, so it resumes once writes work again and finds this reply on the
            # platform (find_delivery) instead of posting a second one.
            log.error("turn %s: its reply could not be recorded (%s); delivering it anyway", turn.id, exc)
        return dataclasses.replace(turn, state=state, reply_kind=update.reply_kind, reply_text=text)

    def _count_turn(self, outcome: str, elapsed: float, ctx: TurnContext) -> None:
        self.stats.turns += 1
        self.stats.retries += ctx.retries
        if outcome == "failed":
            self.stats.failed += 1
        else:
            self.stats.answered += 1
        self.metrics.turns.labels(outcome).inc()
        self.metrics.turn_seconds.observe(elapsed)
        self.metrics.tokens.labels("input").inc(ctx.usage.input_tokens)
        self.metrics.tokens.labels("output").inc(ctx.usage.output_tokens)

    async def _deliver(self, turn: TurnRecord, ref: TurnRef, event_ids: list[str], check_first: bool) -> None:
        from bot.types import UNDELIVERABLE_PREFIX, Undeliverable

        surface = self.surfaces.get(ref.platform)
        if surface is None:
            log.warning("turn %s waits for a %s surface to deliver its reply", turn.id, ref.platform)
            return
        assert turn.reply_text is not None
        delivered: str | None = None
        if check_first:
            delivered = await surface.find_delivery(ref)
        if delivered is None:
            if turn.state != "delivering":
                await self.store.update_turn(turn.id, TurnUpdate(state="delivering"))
            reason: str | None = None
            try:
                delivered = await surface.deliver(ref, Reply(turn.reply_text, turn.reply_kind or "answer"))
            except asyncio.CancelledError:
                raise  # stopping: the turn stays `delivering` and resumes (find_delivery first) on the next start
            except Undeliverable as exc:
                reason = exc.reason
                log.warning("turn %s: its reply could not be delivered on %s: %s", turn.id, ref.platform, exc)
            except Exception as exc:
                reason = f"error:{type(exc).__name__}"
                log.exception("turn %s: delivering its reply to %s failed unexpectedly", turn.id, ref.platform)
            if reason is None:
                self.metrics.deliveries.labels(ref.platform, turn.reply_kind or "answer").inc()
            else:
                # The surface already retried and tried every other way: leaving the turn `delivering` would only
                # retry it on the next message or restart, behind the user's back. Record the outcome instead.
                self.metrics.undeliverable.labels(ref.platform).inc()
                delivered = f"{UNDELIVERABLE_PREFIX}{reason}"
        await self.store.finish_delivery(turn.id, delivered or "-", event_ids)

    async def _emit(self, ref: TurnRef, event: Progress) -> None:
        surface = self.surfaces.get(ref.platform)
        if surface is None:
            return
        try:
            await surface.progress(ref, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("progress update to %s failed for turn %s", ref.platform, ref.id, exc_info=True)

    @staticmethod
    def _ref(turn: TurnRecord, messages: list[InboxMessage]) -> TurnRef:
        newest = messages[-1] if messages else None
        return TurnRef(
            id=turn.id,
            conversation=turn.conversation,
            channel=newest.channel if newest else "",
            platform=newest.platform if newest else "console",  # type: ignore[arg-type]
            route=dict(newest.route) if newest else {},
            users=tuple(dict.fromkeys(m.user for m in messages)),
        )
