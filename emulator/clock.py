"""The emulator's clock. Scripted delays, background work and run expiry all run on it, so tests can drive time.

`RealClock` is wall time. `ManualClock` only moves when a test calls ``await clock.advance(seconds)``; sleepers
wake in deadline order, and each woken task gets to run before the next deadline is processed, so chains of
sleeps (sleep 1 s, then 2 s more) behave as they would in real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

MANUAL_CLOCK_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed, readable origin for manual time.
_YIELDS_PER_WAKE = 20  # event-loop turns granted to woken tasks before the clock moves on


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, deadline: float) -> None: ...


class RealClock:
    """Wall-clock time; sleeping is `asyncio.sleep`."""

    manual = False

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(0)

    async def sleep_until(self, deadline: float) -> None:
        await self.sleep(deadline - time.time())


class ManualClock:
    """A clock that moves only when told to. ``advance`` is a coroutine: ``await clock.advance(5)``.

    ``advance_nowait`` is the synchronous form for code that cannot await; it moves time and wakes every sleeper
    whose deadline has passed at once (no ordering guarantee between chained sleeps).
    """

    manual = True

    def __init__(self, start: float = MANUAL_CLOCK_START) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._sleeper_added: asyncio.Event | None = None

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for the clock (cancelled ones excluded)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def next_deadline(self) -> float | None:
        live = [deadline for deadline, _, fut in self._sleepers if not fut.done()]
        return min(live) if live else None

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), fut))
        if self._sleeper_added is not None:
            self._sleeper_added.set()
        await fut

    async def wait_for_sleepers(self, count: int = 1, within: float = 5.0) -> None:
        """Wait (in real time, up to `within` seconds) until at least `count` tasks sleep on this clock."""

        async def _wait() -> None:
            while self.sleepers < count:
                self._sleeper_added = asyncio.Event()
                await self._sleeper_added.wait()

        await asyncio.wait_for(_wait(), within)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in deadline order."""
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            for _ in range(_YIELDS_PER_WAKE):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(_YIELDS_PER_WAKE):
            await asyncio.sleep(0)

    def advance_nowait(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
