"""A small controllable engine for the Slack adapter's tests (implements `bot.types.BotLike`).

`accept` dedupes by event id and, like the real engine, returns at once and runs the turn in the background:
the turn plays a script of progress events on the registered surface and ends with `deliver(Reply)`.
A script item may also be an `asyncio.Event` (the turn waits for it: tests use this to hold a turn open) or a
coroutine function (awaited: e.g. wait until the fake Slack saw a call, or `pause(0.02)` to space model tokens).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from adapters.slack.listeners.messages import InvalidInbound
from bot.types import (
    Accepted,
    CommandContext,
    CommandResult,
    Delegated,
    Done,
    Inbound,
    Progress,
    Reply,
    Started,
    SubFinished,
    Surface,
    TextDelta,
    TurnRef,
)

log = logging.getLogger(__name__)

Waiter = Callable[[], Awaitable[object]]
ScriptItem = Progress | Reply | asyncio.Event | Waiter
Script = Callable[[Inbound], Sequence[ScriptItem]]

ANSWER = "The **researcher** found three sources; the *writer* drafted this summary."


def team_script(answer: str = ANSWER, subs: Sequence[str] = ("researcher", "writer")) -> Script:
    """What the engine does for a turn with sub-assistants: delegate, finish, stream text, reply."""

    def script(inbound: Inbound) -> list[ScriptItem]:
        items: list[ScriptItem] = [Started()]
        items += [Delegated(sub=s, task=f"{s} task for: {inbound.text}", call_id=f"call_{s}") for s in subs]
        items += [SubFinished(sub=s, call_id=f"call_{s}", ok=True) for s in subs]
        step = max(1, len(answer) // 4)
        items += [TextDelta(answer[i : i + step]) for i in range(0, len(answer), step)]
        items += [Done(answer), Reply(answer)]
        return items

    return script


def pause(seconds: float) -> Waiter:
    """A script step that spaces events out in time, like a model producing tokens."""

    async def _pause() -> None:
        await asyncio.sleep(seconds)

    return _pause


@dataclass
class Delivery:
    turn: TurnRef
    reply: Reply
    ts: str


@dataclass
class FakeBot:
    script: Script = field(default_factory=team_script)
    command_result: CommandResult = field(default_factory=lambda: CommandResult(True, "ok"))
    surfaces: list[Surface] = field(default_factory=list)
    inbounds: list[Inbound] = field(default_factory=list)
    accept_calls: int = 0
    commands: list[tuple[CommandContext, str]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    #: when set, `command` waits for it (to show the adapter acks before the engine answers)
    command_gate: asyncio.Event | None = None
    #: when set, `accept` refuses every message with this text (as the engine does for empty/too long ones)
    refuse_with: str | None = None

    def __post_init__(self) -> None:
        #: monotonic time each accepted (non-duplicate) inbound was accepted at
        self.accepted_at: list[float] = []
        self._seen: set[str] = set()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()

    # ---- BotLike ----------------------------------------------------------------------------------------------------

    def add_surface(self, surface: Surface) -> None:
        self.surfaces.append(surface)

    async def accept(self, inbound: Inbound) -> Accepted:
        self.accept_calls += 1
        if self.refuse_with is not None:
            raise InvalidInbound(self.refuse_with)
        if inbound.event_id in self._seen:
            return Accepted(inbound.event_id, inbound.conversation, duplicate=True)
        self._seen.add(inbound.event_id)
        self.inbounds.append(inbound)
        self.accepted_at.append(time.monotonic())
        task = asyncio.create_task(self._run(inbound))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._notify()
        return Accepted(inbound.event_id, inbound.conversation)

    async def command(self, ctx: CommandContext, text: str) -> CommandResult:
        self.commands.append((ctx, text))
        await self._notify()
        if self.command_gate is not None:
            await self.command_gate.wait()
        return self.command_result

    async def has_conversation(self, conversation: str) -> bool:
        return False  # the adapter's own memory of its threads is all these tests use

    # ---- test helpers -----------------------------------------------------------------------------------------------

    @property
    def surface(self) -> Surface:
        return self.surfaces[0]

    def turn_for(self, inbound: Inbound) -> TurnRef:
        return TurnRef(
            id=f"turn-{next(self._ids)}",
            conversation=inbound.conversation,
            channel=inbound.channel,
            platform="slack",
            route=dict(inbound.route),
            users=(inbound.user,),
        )

    async def wait_for(self, predicate: Callable[[], object], within: float = 5.0) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(predicate()))

        try:
            await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            raise AssertionError(f"fake bot: condition not met; errors={self.errors!r}") from None

    async def wait_deliveries(self, n: int, within: float = 5.0) -> list[Delivery]:
        await self.wait_for(lambda: len(self.deliveries) >= n or self.errors, within)
        if self.errors:
            raise self.errors[0]
        return self.deliveries

    async def settle(self, within: float = 10.0) -> None:
        """Wait for every running turn to end; turns still running after `within` seconds are cancelled."""
        try:
            async with asyncio.timeout(within):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _run(self, inbound: Inbound) -> None:
        turn = self.turn_for(inbound)
        try:
            for item in self.script(inbound):
                if isinstance(item, asyncio.Event):
                    await item.wait()
                elif callable(item):
                    await item()
                elif isinstance(item, Reply):
                    ts = await self.surface.deliver(turn, item)
                    self.deliveries.append(Delivery(turn, item, ts))
                else:
                    try:
                        await self.surface.progress(turn, item)
                    except Exception:  # progress is best effort, as in the engine
                        log.exception("progress failed")
        except BaseException as e:
            self.errors.append(e)
            raise
        finally:
            await self._notify()
