"""Small helpers for the reliability tests: a team with short clocks, a bot on a recording surface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.config import TeamConfig
from bot.engine import Bot, make_backend
from bot.types import Inbound, Progress, Reply, TurnRef
from fakes.configs import soak_team
from fakes.console import ConsolePlatform
from storage.base import RunRecord
from storage.sqlite import SQLiteStore

WAIT = 20.0


class Surface(ConsolePlatform):
    """The soak's console platform, plus a way to wait for deliveries."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Progress] = []
        self._changed = asyncio.Condition()

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_events(self, kind: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: sum(e.kind == kind for e in self.events) >= count)

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        ref = await super().deliver(turn, reply)
        async with self._changed:
            self._changed.notify_all()
        return ref

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.posted) >= count)


def team(base_url: str, db: str | Path, **limits: Any) -> TeamConfig:
    import dataclasses

    cfg = soak_team(base_url, str(db))
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, **limits))


def conversations_team(base_url: str, db: str | Path, **limits: Any) -> TeamConfig:
    """`team` with `[openai] threads = "conversations"`: for the regressions that live in a Conversation (locks,
    items, the adoption of a lost create), found before chains became the default."""
    import dataclasses

    return dataclasses.replace(team(base_url, db, **limits), response_threads="conversations")


class RecordingStore(SQLiteStore):
    """Tells a test when a run of an agent is durably recorded (`recorded[agent]` is set)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.recorded: dict[str, asyncio.Event] = {}

    def run_recorded(self, agent: str) -> asyncio.Event:
        return self.recorded.setdefault(agent, asyncio.Event())

    async def record_run(self, run: RunRecord) -> None:
        await super().record_run(run)
        self.run_recorded(run.agent).set()


@asynccontextmanager
async def running_bot(cfg: TeamConfig, store: SQLiteStore | None = None) -> AsyncIterator[tuple[Bot, Surface]]:
    bot = Bot(cfg, store or SQLiteStore(cfg.db_path), make_backend(cfg))
    surface = Surface()
    bot.add_surface(surface)
    await bot.start()
    try:
        yield bot, surface
    finally:
        await bot.stop()


_ids = iter(range(1, 1_000_000))


def message(text: str, conversation: str = "console:rel:c1") -> Inbound:
    return Inbound("console", f"rel-{next(_ids)}", conversation, "console:rel", "u1", text)
