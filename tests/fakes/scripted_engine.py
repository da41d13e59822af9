"""The real engine (`bot.engine.Bot`: store, mailbox, progress, delivery, its bookkeeping) with a scripted AI.

For platform tests that need the engine's own handling of a turn (states, `undeliverable` records, metrics) but a
deterministic sequence of platform calls: instead of asking a provider, each turn plays the script its message
names (the message's last word), and after the engine's `Started` and every progress event waits for the surface
to finish showing it (`settle(turn_id)`), so the calls a turn makes come in the same order on every run.

    orchestrator = ScriptedOrchestrator(scripts, settle=surface.settled)
    bot = scripted_bot(orchestrator)          # then bot.add_surface(...), bot.start()
    ...
    record = await bot.store.get_turn(orchestrator.turn_of[conversation])

`WatchedStore.finished(turn_id)` is an event set once the turn's delivery was recorded (delivered or not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.engine import Bot, make_backend
from bot.orchestrator import TurnContext, TurnOutcome
from bot.types import Progress, Usage
from storage.sqlite import SQLiteStore
from tests.engine.harness import team

#: the backend is built but never called: nothing listens here
UNUSED_PROVIDER_URL = "http://127.0.0.1:9/v1"


@dataclass(frozen=True)
class TurnScript:
    """What a turn does: its progress events, in order, then its answer."""

    events: Sequence[Progress]
    answer: str


class ScriptedOrchestrator:
    """Stands in for `bot.orchestrator.Orchestrator` (only `run_turn` is used by the engine)."""

    def __init__(self, scripts: Mapping[str, TurnScript], settle: Callable[[str], Awaitable[None]]) -> None:
        self.scripts = scripts
        self.settle = settle
        #: conversation key, and the text of the turn's last message -> id of its (latest) turn
        self.turn_of: dict[str, str] = {}
        self._started: dict[str, asyncio.Event] = {}

    def started(self, key: str) -> asyncio.Event:
        """Set once a turn of conversation `key`, or answering the message text `key`, started (its id is then in
        `turn_of`)."""
        return self._started.setdefault(key, asyncio.Event())

    async def run_turn(self, ctx: TurnContext, messages: list[str]) -> TurnOutcome:
        for key in (ctx.turn.conversation, messages[-1]):
            self.turn_of[key] = ctx.turn.id
            self.started(key).set()
        script = self.scripts[messages[-1].split()[-1]]
        await self.settle(ctx.turn.id)  # what the engine's `Started` set off
        for event in script.events:
            await ctx.emit(event)
            await self.settle(ctx.turn.id)
        return TurnOutcome(text=script.answer, incomplete=False, usage=Usage())


class WatchedStore(SQLiteStore):
    """Tells a test when a turn's delivery was recorded."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._finished: dict[str, asyncio.Event] = {}

    def finished(self, turn_id: str) -> asyncio.Event:
        return self._finished.setdefault(turn_id, asyncio.Event())

    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        await super().finish_delivery(turn_id, delivered_ref, event_ids)
        self.finished(turn_id).set()


def scripted_bot(orchestrator: ScriptedOrchestrator, db_path: str = ":memory:") -> Bot:
    cfg = team(UNUSED_PROVIDER_URL, db_path)
    bot = Bot(cfg, WatchedStore(cfg.db_path), make_backend(cfg))
    bot.orchestrator = orchestrator  # type: ignore[assignment]
    return bot
