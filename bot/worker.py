"""The conversation worker: what the mailbox runs for a conversation, one unit of work at a time.

`process(conversation)` resumes the conversation's oldest unfinished turn when it may have one (after a restart or
an admin action), else starts a turn from its waiting messages, records each state before acting on it (received ->
running <-> awaiting_tools -> replied -> delivering -> delivered), and returns False once there is nothing to do.
A turn whose platform has no surface in this process waits for it without holding the worker (logged once), the
conversation's later messages behind it, until `surface_added` hands the conversation back. A message that reaches
an idle conversation may be `announce`d: its turn's id is chosen at once, so the thinking indicator is shown before
the worker gets to it, and that turn is then that message alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from bot import accounting
from bot.backends.base import BackendError
from bot.delivery import Delivery
from bot.metrics import Metrics
from bot.orchestrator import MAIN_THREAD, Orchestrator, TurnContext
from bot.supervisor import RunFailed
from bot.types import Done, Failed, Progress, Started, TurnRef, Usage, Withdrawn
from storage.base import (
    InboxMessage,
    LeaseLost,
    ReplyKind,
    Store,
    StoreError,
    TurnRecord,
    TurnState,
    TurnUpdate,
    new_turn_id,
)

log = logging.getLogger("switchboard.engine.worker")

INTERNAL_ERROR_TEXT = "Something went wrong on our side while answering; the error was logged for the operator."
INCOMPLETE_NOTE = "\n\n_(This answer was cut short by the AI provider's limits.)_"
ANSWERING_STATES = ("received", "running", "awaiting_tools")
DELIVERY_STATES = ("replied", "delivering")


@dataclass(slots=True)
class TurnStats:
    """What the last turns did, for logs, metrics and benchmarks."""

    turns: int = 0
    answered: int = 0
    failed: int = 0
    retries: int = 0


#: starts booking a turn's usage: (platform, user, channel, conversation, usage by model) -> the booking, running
#: (`bot.access.Policy.charge`, which logs a failed booking itself)
Charge = Callable[[str, str, str, str, Mapping[str, Usage]], "asyncio.Future[None]"]


class ConversationWorker:
    def __init__(self, store: Store, orchestrator: Orchestrator, delivery: Delivery, metrics: Metrics,
                 charge: Charge | None = None) -> None:
        self.orchestrator = orchestrator
        self._charge = charge
        self.stats = TurnStats()
        self._store = store
        self._delivery = delivery
        self._metrics = metrics
        # Conversations that may hold an unfinished turn: interrupted before this start, or changed by an admin
        # action. Every other conversation's turns are started and finished by its own worker, so the worker need
        # not ask the database first.
        self._may_resume: set[str] = set()
        self._waiting_for_surface: dict[str, str] = {}  # conversation -> the platform its oldest turn waits for
        # Turns shown as started when their message was accepted, not yet recorded: conversation -> (the turn as the
        # surface knows it, the message's event id).
        self._announced: dict[str, tuple[TurnRef, str]] = {}
        # Conversations whose turn is answered and whose worker reads the inbox next (it has not yet): a message
        # accepted now starts the next turn. Set at delivery, kept through the turn's bookkeeping, cleared when the
        # worker has the inbox's answer in hand.
        self._reads_inbox_next: set[str] = set()

    @property
    def resuming(self) -> Set[str]:
        """The conversations whose next unit of work looks for an unfinished turn first."""
        return self._may_resume

    def resume_first(self, conversation: str) -> None:
        """The next unit of work for `conversation` looks for an unfinished turn before new messages (the caller
        wakes its worker)."""
        self._may_resume.add(conversation)

    def surface_added(self, platform: str) -> list[str]:
        """The conversations whose turn waited for `platform`'s surface, now to be resumed (the caller wakes them)."""
        waiting = [c for c, p in self._waiting_for_surface.items() if p == platform]
        for conversation in waiting:
            del self._waiting_for_surface[conversation]
            self._may_resume.add(conversation)
        return waiting

    def reads_inbox_next(self, conversation: str) -> bool:
        """The conversation's turn is answered (delivering its reply, or finishing after it) and its worker has not
        read the inbox since: a message accepted now starts the next turn."""
        return conversation in self._reads_inbox_next

    def announce(self, message: InboxMessage) -> TurnRef | None:
        """Choose now the id of the turn that `message` starts, for the caller to show it as started before the
        worker runs; None when the conversation already has such a turn waiting. Only for a message that reached a
        conversation of this instance that is idle or delivering its turn's reply (it starts the next turn either way):
        that turn is then exactly this message (later ones join the turn after it)."""
        if message.conversation in self._announced:
            return None
        ref = _ref(new_turn_id(), message.conversation, [message])
        self._announced[message.conversation] = (ref, message.event_id)
        return ref

    async def process(self, conversation: str) -> bool:
        """One unit of work for a conversation: resume its unfinished turn, or start one from its inbox."""
        if conversation in self._waiting_for_surface:
            return False
        if conversation in self._may_resume:
            self._reads_inbox_next.discard(conversation)
            unfinished = await self._store.unfinished_turns(conversation)
            if unfinished:
                turn = unfinished[0]
                await self._drive(turn, await self._store.inbound_for_turn(turn.id), resumed=True)
                return True
            self._may_resume.discard(conversation)
        pending = await self._store.pending_inbound(conversation)
        # A message announced while the flag was set is in `pending`: it was stored before this read ran (one
        # database thread answers in order, and a read answered before the message's write reaches this line before
        # its accept looks at the flag). One accepted from here on waits for the next read.
        self._reads_inbox_next.discard(conversation)
        pending, turn_id = await self._take_announced(conversation, pending)
        if not pending:
            return False
        record = await self._store.get_conversation(conversation)
        turn = TurnRecord.new(conversation, record.generation if record else 0, id=turn_id)
        await self._store.start_turn(turn, pending, MAIN_THREAD)
        if turn_id is not None:
            del self._announced[conversation]
        main_thread = record.main_thread if record else None
        try:
            await self._drive(turn, pending, resumed=False, main_thread=main_thread, shown=turn_id is not None)
        except BaseException:
            self._may_resume.add(conversation)  # interrupted (cancelled, store failure): resume it from the record
            raise
        return True

    async def _take_announced(
        self, conversation: str, pending: list[InboxMessage]
    ) -> tuple[list[InboxMessage], str | None]:
        """The messages of the next turn and its announced id (None: not announced). Messages older than the
        announced one go first, in a turn of their own. The announcement is dropped once its turn is recorded."""
        announced = self._announced.get(conversation)
        if announced is None:
            return pending, None
        ref, event_id = announced
        ids = [m.event_id for m in pending]
        if event_id not in ids:
            del self._announced[conversation]
            # Either its turn was recorded by a unit of work cut short right after (resumed under the same id), or
            # the message was deleted before its turn began (`forget`): then the surface drops the indicator.
            if await self._store.get_turn(ref.id) is None:
                await self._delivery.progress(ref, Withdrawn())
            return pending, None
        if ids[0] != event_id:
            return pending[: ids.index(event_id)], None
        return pending[:1], ref.id

    async def _drive(
        self, turn: TurnRecord, messages: list[InboxMessage], resumed: bool, main_thread: str | None = None,
        shown: bool = False,
    ) -> None:
        ref = turn_ref(turn, messages)
        booking: asyncio.Future[None] | None = None
        if turn.state in ANSWERING_STATES:
            author = messages[-1].user if messages else ""
            turn, booking = await self._answer(turn, ref, [m.text for m in messages], resumed, main_thread, author,
                                               shown)
        try:
            if turn.state not in DELIVERY_STATES:
                return
            if not self._delivery.has_surface(ref.platform):
                self._wait_for_surface(turn, ref.platform)
                return
            self._reads_inbox_next.add(turn.conversation)
            await self._delivery.deliver(turn, ref, [m.event_id for m in messages], check_first=resumed)
        finally:
            if booking is not None:
                await asyncio.shield(booking)  # written before the turn counts as done; a cancel here leaves it running

    def _wait_for_surface(self, turn: TurnRecord, platform: str) -> None:
        # Not resumed again until the surface is added: asking the database over and over would change nothing.
        self._may_resume.discard(turn.conversation)
        self._waiting_for_surface[turn.conversation] = platform
        log.warning("turn %s waits for a %s surface to deliver its reply; it is delivered once one is added",
                    turn.id, platform)

    async def _answer(
        self, turn: TurnRecord, ref: TurnRef, texts: list[str], resumed: bool, main_thread: str | None,
        author: str = "", shown: bool = False,
    ) -> tuple[TurnRecord, asyncio.Future[None] | None]:
        started = time.monotonic()

        async def emit(event: Progress) -> None:
            await self._delivery.progress(ref, event)

        if not shown:  # else shown when its message was accepted (`announce`)
            await emit(Started())
        ctx = TurnContext(turn=turn, emit=emit, fresh=not resumed, main_thread=main_thread)
        kind: ReplyKind = "answer"
        text = ""
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
        except LeaseLost:
            raise  # another instance owns the conversation now and finishes this turn: no reply from here
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
        result = "failed" if kind == "failure" else "incomplete" if text.endswith(INCOMPLETE_NOTE) else "answered"
        self._count_turn(result, elapsed, ctx)
        log.info(
            "turn %s %s in %.0f ms, %d retries, %s (%s)",
            turn.id, result, elapsed * 1000, ctx.retries, accounting.tokens_text(ctx.usage),
            accounting.by_agent_text(ctx.by_agent),
            extra={"turn": turn.id, "conversation": turn.conversation, "outcome": result,
                   "latency_ms": round(elapsed * 1000), "retries": ctx.retries,
                   **accounting.log_fields(ctx.usage, ctx.by_agent)},
        )
        # Recorded straight as `delivering` when we are about to post: a crash from here on makes recovery look
        # for the reply on the platform before posting it, which is what exactly-once needs.
        state: TurnState = "delivering" if self._delivery.has_surface(ref.platform) else "replied"
        update = TurnUpdate(
            state=state,
            reply_kind=kind,
            reply_text=text,
            add_retries=ctx.retries,
            add_input_tokens=ctx.usage.input_tokens,
            add_output_tokens=ctx.usage.output_tokens,
        )
        try:
            await self._store.record_reply(turn, update, MAIN_THREAD)
        except StoreError as exc:
            if state != "delivering" or isinstance(exc, LeaseLost):
                raise
            # The database refuses writes (full, read-only): the user still gets this reply now. The turn stays
            # unfinished in the database, so it resumes once writes work again and finds this reply on the
            # platform (find_delivery) instead of posting a second one.
            log.error("turn %s: its reply could not be recorded (%s); delivering it anyway", turn.id, exc)
        # Booked after the reply is recorded (a crash in between loses this turn's booking, never doubles it), while
        # it is delivered: the booking is not on the user's wait, and a budget check made after the user has seen the
        # reply waits for it (`Policy.settled`).
        booking = None
        if self._charge is not None:
            booking = self._charge(ref.platform, author, ref.channel, turn.conversation, ctx.by_model)
        return dataclasses.replace(turn, state=state, reply_kind=update.reply_kind, reply_text=text), booking

    def _count_turn(self, outcome: str, elapsed: float, ctx: TurnContext) -> None:
        self.stats.turns += 1
        self.stats.retries += ctx.retries
        if outcome == "failed":
            self.stats.failed += 1
        else:
            self.stats.answered += 1
        self._metrics.turns.labels(outcome).inc()
        self._metrics.turn_seconds.observe(elapsed)
        accounting.count(self._metrics, ctx.by_agent)


def turn_ref(turn: TurnRecord, messages: list[InboxMessage]) -> TurnRef:
    """How a surface knows the turn: its ids, and the route and platform of its newest message."""
    return _ref(turn.id, turn.conversation, messages)


def _ref(turn_id: str, conversation: str, messages: list[InboxMessage]) -> TurnRef:
    newest = messages[-1] if messages else None
    return TurnRef(
        id=turn_id,
        conversation=conversation,
        channel=newest.channel if newest else "",
        platform=newest.platform if newest else "console",  # type: ignore[arg-type]
        route=dict(newest.route) if newest else {},
        users=tuple(dict.fromkeys(m.user for m in messages)),
    )
