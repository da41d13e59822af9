"""Shared pieces for the benchmarks: an emulator in its own process, a team, and a surface that times replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bot.config import AgentConfig, Limits, TeamConfig
from bot.engine import Bot
from bot.types import Inbound, Progress, Reply, TurnRef

REPO = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def emulator_process(scripts: dict[str, list[dict[str, Any]]] | None = None,
                           latency: float = 0.0) -> AsyncIterator[str]:
    """Run `switchboard emulator --port 0` in a subprocess (so its CPU is not ours); yields its base URL."""
    with tempfile.TemporaryDirectory() as folder:
        args = [sys.executable, "-m", "switchboard.cli", "emulator", "--port", "0", "--latency", str(latency)]
        if scripts:
            path = Path(folder) / "scripts.json"  # JSON is valid YAML
            path.write_text(json.dumps(scripts))
            args += ["--scripts", str(path)]
        proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        try:
            yield url
        finally:
            proc.terminate()
            await proc.wait()


def make_team(base_url: str, db: str, subs: int = 3, backend: str = "responses", threads: str = "chains",
              **limits: Any) -> TeamConfig:
    return TeamConfig(
        backend=backend,  # type: ignore[arg-type]
        response_threads=threads,  # type: ignore[arg-type]
        proxy=AgentConfig(name="proxy", instructions="You are the proxy.", model="bench"),
        subs=tuple(
            AgentConfig(name=f"s{i}", instructions=f"Sub {i}.", model="bench", description=f"Sub-assistant {i}.")
            for i in range(1, subs + 1)
        ),
        limits=Limits(**{"max_parallel": 8, **limits}),
        db_path=db,
        base_url=base_url,
        api_key="bench",
    )


class TimingSurface:
    platform = "console"

    def __init__(self) -> None:
        self.done: dict[str, float] = {}  # conversation -> monotonic time of delivery
        self.first_progress: dict[str, float] = {}
        self.replies: dict[str, Reply] = {}
        self.turn_ids: dict[str, str] = {}
        self._events: dict[str, asyncio.Event] = {}

    def expect(self, conversation: str) -> asyncio.Event:
        event = self._events[conversation] = asyncio.Event()
        return event

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        self.first_progress.setdefault(turn.conversation, time.perf_counter())

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        self.done[turn.conversation] = time.perf_counter()
        self.replies[turn.conversation] = reply
        self.turn_ids[turn.conversation] = turn.id
        self._events[turn.conversation].set()
        return turn.id

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return None


@asynccontextmanager
async def bench_bot(team: TeamConfig) -> AsyncIterator[tuple[Bot, TimingSurface]]:
    bot = Bot.from_config(team)
    surface = TimingSurface()
    bot.add_surface(surface)
    async with bot.running():
        yield bot, surface


async def emulator_seconds(bot: Bot, base_url: str, turn_ids: list[str], first_turns: bool) -> dict[str, float]:
    """Time the emulator itself spent serving each turn's requests (from its request log), counting the
    conversation's creation for first turns. A plain turn's requests are sequential, so this is the provider's
    share of the turn."""
    control = base_url.removesuffix("/v1") + "/_emulator"
    async with aiohttp.ClientSession() as session:
        async with session.get(control + "/log") as response:
            entries = (await response.json())["entries"]
        async with session.get(control + "/objects") as response:
            chat = (await response.json()).get("chat_completions") or []
    by_object: dict[str, float] = {}
    for entry in entries:
        if entry["method"] == "POST" and entry["object_id"]:
            by_object[entry["object_id"]] = entry["t_end"] - entry["t_start"]
    for completion in chat:  # the engine records a chat run under its own id, which it sent in a header
        if completion["client_run"] and completion["id"] in by_object:
            by_object[completion["client_run"]] = by_object[completion["id"]]
    from storage.postgres import PostgresStore

    if isinstance(bot.store, PostgresStore):
        return await _provider_seconds_postgres(bot.store, by_object, turn_ids, first_turns)
    return await asyncio.to_thread(_provider_seconds, bot.team.db_path, by_object, turn_ids, first_turns)


async def _provider_seconds_postgres(store: Any, by_object: dict[str, float], turn_ids: list[str],
                                     first_turns: bool) -> dict[str, float]:
    """`_provider_seconds` for a bot on PostgreSQL (benchmarks/store_overhead.py)."""
    result = {}
    for turn_id in turn_ids:
        rows = await store._fetch("SELECT remote_id FROM runs WHERE turn_id=$1", turn_id)
        result[turn_id] = sum(by_object.get(row["remote_id"], 0.0) for row in rows)
        if first_turns:
            conv = await store._fetchrow(
                "SELECT main_thread FROM conversations JOIN turns ON turns.conversation = conversations.key"
                " WHERE turns.id=$1", turn_id)
            result[turn_id] += by_object.get(conv["main_thread"], 0.0)
    return result


def _provider_seconds(db_path: str, by_object: dict[str, float], turn_ids: list[str],
                      first_turns: bool) -> dict[str, float]:
    """Each turn's share of `by_object` (seconds per remote object), from the engine's records in its file."""
    result = {}
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        for turn_id in turn_ids:
            rows = db.execute("SELECT remote_id FROM runs WHERE turn_id=?", (turn_id,)).fetchall()
            result[turn_id] = sum(by_object.get(row[0], 0.0) for row in rows)
            if first_turns:
                conv = db.execute(
                    "SELECT main_thread FROM conversations JOIN turns ON turns.conversation = conversations.key"
                    " WHERE turns.id=?", (turn_id,)).fetchone()
                result[turn_id] += by_object.get(conv[0], 0.0)
    return result


def new_conversations(count: int) -> list[str]:
    return [f"console:bench:{uuid.uuid4().hex[:12]}" for _ in range(count)]


async def timed_turns(bot: Bot, surface: TimingSurface, texts: list[str],
                      conversations: list[str] | None = None) -> dict[str, float]:
    """Send one message to each conversation at once (fresh ones unless given); return each turn's seconds."""
    starts: dict[str, float] = {}
    waits = []
    conversations = conversations or new_conversations(len(texts))
    for text, conversation in zip(texts, conversations, strict=True):
        waits.append(surface.expect(conversation).wait())
        starts[conversation] = time.perf_counter()
        await bot.accept(Inbound("console", uuid.uuid4().hex, conversation, "console:bench", "u", text))
    await asyncio.gather(*waits)
    for conversation in starts:
        reply = surface.replies[conversation]
        if reply.kind != "answer":
            raise RuntimeError(f"benchmark turn failed: {reply.text}")
    return {surface.turn_ids[c]: surface.done[c] - starts[c] for c in starts}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]


def temp_db() -> str:
    return str(Path(tempfile.mkdtemp(prefix="switchboard-bench-")) / "bench.db")
