"""Load shapes for the performance suite: a surface that times every turn, a closed-loop steady state, bursts.

Times are `time.perf_counter()` in the engine's process. For one turn:

* `sent`: just before `Bot.accept` is called (the adapter hands the event over);
* `accepted`: `Bot.accept` returned (the event is persisted, the conversation's worker is woken);
* `started`: the surface was asked to show the thinking indicator (`progress(Started)`);
* `delivered`: the surface was asked to post the reply.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from bot.engine import Bot
from bot.types import Inbound, Progress, Reply, Started, TurnRef


@dataclass(slots=True)
class TurnTiming:
    conversation: str
    text: str
    sent: float
    accepted: float = 0.0
    started: float | None = None
    delivered: float | None = None
    turn_id: str = ""
    kind: str = ""

    @property
    def seconds(self) -> float:
        assert self.delivered is not None
        return self.delivered - self.sent

    @property
    def indicator(self) -> float:
        """Seconds from the event being accepted to the thinking indicator being requested."""
        assert self.started is not None
        return self.started - self.accepted

    @property
    def indicator_from_sent(self) -> float:
        """Seconds from the event being handed to `Bot.accept` (its write included) to the indicator request."""
        assert self.started is not None
        return self.started - self.sent


class LoadSurface:
    """A console surface that times each conversation's current turn (one in flight per conversation)."""

    platform = "console"

    def __init__(self) -> None:
        self.current: dict[str, TurnTiming] = {}
        self._waiters: dict[str, asyncio.Future[TurnTiming]] = {}

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        if isinstance(event, Started):
            timing = self.current.get(turn.conversation)
            if timing is not None and timing.started is None:
                timing.started = time.perf_counter()

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        now = time.perf_counter()
        timing = self.current.pop(turn.conversation, None)
        waiter = self._waiters.pop(turn.conversation, None)
        if timing is not None:
            timing.delivered, timing.turn_id, timing.kind = now, turn.id, reply.kind
            if reply.kind != "answer":
                timing.text = reply.text
        if waiter is not None and not waiter.done():
            waiter.set_result(timing)  # type: ignore[arg-type]
        return turn.id

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return None

    async def send(self, bot: Bot, conversation: str, text: str) -> TurnTiming:
        """Hand one message to the engine and wait for its reply; the conversation must be idle."""
        timing = TurnTiming(conversation, text, time.perf_counter())
        self.current[conversation] = timing
        waiter = self._waiters[conversation] = asyncio.get_running_loop().create_future()
        await bot.accept(Inbound("console", uuid.uuid4().hex, conversation, "console:bench", "u", text))
        timing.accepted = time.perf_counter()
        result = await waiter
        if result.kind != "answer":
            raise RuntimeError(f"benchmark turn failed: {result.text}")
        return result


def conversations(count: int, prefix: str = "bench") -> list[str]:
    return [f"console:{prefix}:{uuid.uuid4().hex[:12]}" for _ in range(count)]


@dataclass(slots=True)
class SteadyResult:
    timings: list[TurnTiming]
    in_flight: list[int] = field(default_factory=list)  # samples every 100 ms during the measured window
    window: float = 0.0
    total: int = 0  # every turn of the run, warm-up included

    @property
    def rate(self) -> float:
        return len(self.timings) / self.window if self.window else 0.0


async def closed_loop(
    bot: Bot, surface: LoadSurface, convs: list[str], text: str, *, ramp: float, warmup: float, measure: float,
) -> SteadyResult:
    """Steady state: every conversation always has one turn in flight (it sends its next message the moment the
    previous reply is delivered). First messages are spread evenly over `ramp` seconds, so arrivals are spread
    out too; turns sent in [warmup, warmup + measure) are measured (all of them follow-up turns when
    warmup >= ramp + one turn)."""
    t0 = time.perf_counter()
    measure_from, stop_at = t0 + warmup, t0 + warmup + measure
    result = SteadyResult([], window=measure)
    in_flight = 0

    async def conversation(index: int, conv: str) -> None:
        nonlocal in_flight
        await asyncio.sleep(ramp * index / len(convs))
        while time.perf_counter() < stop_at:
            in_flight += 1
            try:
                timing = await surface.send(bot, conv, text)
            finally:
                in_flight -= 1
            result.total += 1
            if timing.sent >= measure_from:
                result.timings.append(timing)

    async def sample() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        while time.perf_counter() < stop_at:
            result.in_flight.append(in_flight)
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(conversation(i, c) for i, c in enumerate(convs)))
    await sampler
    return result


async def burst(bot: Bot, surface: LoadSurface, convs: list[str], text: str) -> list[TurnTiming]:
    """Every conversation's message arrives at once (concurrent `accept` calls, as an adapter's handlers would)."""
    return list(await asyncio.gather(*(surface.send(bot, c, text) for c in convs)))
