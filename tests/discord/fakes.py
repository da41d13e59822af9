"""Test doubles for the Discord adapter: a controllable clock and a small engine implementing `BotLike`."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence

from bot.types import (
    Accepted,
    CommandContext,
    CommandResult,
    Inbound,
    Progress,
    Reply,
    Surface,
    TurnRef,
)


class FakeClock:
    """Time that moves only when a test says so. `sleep` waits for `advance`; `now` starts at the real time so
    snowflakes made from it are plausible."""

    def __init__(self) -> None:
        self._wall = time.time()
        self._mono = 1_000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._ids), future))
        await future

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())


class Outcomes:
    """Observer of the message listener: what became of each message (accepted, ignored:<why>, hint...)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self._events: dict[str, asyncio.Event] = {}

    def __call__(self, message: object, outcome: str) -> None:
        key = str(getattr(message, "id", ""))
        self.seen[key] = outcome
        self._events.setdefault(key, asyncio.Event()).set()

    async def of(self, message_id: object, within: float = 5.0) -> str:
        key = str(message_id)
        async with asyncio.timeout(within):
            await self._events.setdefault(key, asyncio.Event()).wait()
        return self.seen[key]


class FakeBot:
    """Stands in for `bot.engine.Bot`: records what the adapter hands over; tests drive the surface themselves,
    in the order the engine does (progress events, then one `deliver`)."""

    def __init__(self) -> None:
        self.surfaces: list[Surface] = []
        self.inbound: list[Inbound] = []
        self.accept_calls = 0
        self.commands: list[tuple[CommandContext, str]] = []
        self.results: dict[str, CommandResult] = {}
        self._seen: set[str] = set()
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self.accept_error: Exception | None = None
        self._changed = asyncio.Condition()

    def add_surface(self, surface: Surface) -> None:
        self.surfaces.append(surface)

    @property
    def surface(self) -> Surface:
        (surface,) = self.surfaces
        return surface

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], object], within: float = 5.0) -> object:
        async with asyncio.timeout(within), self._changed:
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def accept(self, inbound: Inbound) -> Accepted:
        self.accept_calls += 1
        await self._notify()
        if self.accept_error is not None:
            raise self.accept_error
        if inbound.event_id in self._seen:
            return Accepted(inbound.event_id, inbound.conversation, duplicate=True)
        self._seen.add(inbound.event_id)
        self.inbound.append(inbound)
        self._queue.put_nowait(inbound)
        return Accepted(inbound.event_id, inbound.conversation)

    async def command(self, ctx: CommandContext, text: str) -> CommandResult:
        self.commands.append((ctx, text))
        await self._notify()
        return self.results.get(text, CommandResult(True, f"ran {text}"))

    async def has_conversation(self, conversation: str) -> bool:
        return False

    async def next_inbound(self, within: float = 5.0) -> Inbound:
        async with asyncio.timeout(within):
            return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()

    @staticmethod
    def turn(inbound: Inbound, turn_id: str | None = None) -> TurnRef:
        return TurnRef(
            id=turn_id or f"turn-{inbound.event_id}",
            conversation=inbound.conversation,
            channel=inbound.channel,
            platform="discord",
            route=dict(inbound.route),
            users=(inbound.user,),
        )

    async def run_turn(
        self, inbound: Inbound, answer: str, events: Sequence[Progress] = (), *, turn_id: str | None = None
    ) -> str:
        turn = self.turn(inbound, turn_id)
        for event in events:
            await self.surface.progress(turn, event)
        return await self.surface.deliver(turn, Reply(answer))
