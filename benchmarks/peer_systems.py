"""The systems `benchmarks.peers` compares, each behind one small interface: start, one turn, recover, stop.

Every system gets the same team (proxy, sub-assistants s1..s4, `metadata.agent` naming each so the emulator's
scripted latencies apply) and answers one conversation's turn by conversation key; state lives in `state_dir`
so a restarted process finds it again. Switchboard runs its engine (on the default `responses` backend with
chained threads, with conversations, and on `chat`); the naive bot is `benchmarks.naive_bot` on a thread pool; the
OpenAI Agents SDK (extra `[bench]`) uses `Agent.as_tool` per sub-assistant, parallel tool calls, one
`SQLiteSession` per conversation and tracing off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any, Protocol

from benchmarks.common import make_team
from benchmarks.load import LoadSurface
from bot.config import TeamConfig
from bot.engine import Bot
from bot.types import Progress, Reply, TurnRef
from switchboard.tuning import tuned_process

SUBS = 4
THREADS = 64  # the naive bot's worker threads (one synchronous turn each)


class System(Protocol):
    name: str

    async def start(self) -> None: ...
    async def turn(self, conversation: str, text: str) -> str: ...
    async def recover(self, wait: float) -> list[str]: ...
    async def stop(self) -> None: ...


def team(url: str, state_dir: Path, backend: str = "responses", threads: str = "chains") -> TeamConfig:
    return make_team(url, str(state_dir / "switchboard.db"), subs=SUBS, backend=backend, threads=threads)


class Switchboard:
    """Switchboard on its default backend (Responses, threads chained with `previous_response_id`)."""

    name = "switchboard"
    backend = "responses"
    threads = "chains"

    def __init__(self, url: str, state_dir: Path) -> None:
        self.bot = Bot.from_config(team(url, state_dir, self.backend, self.threads))
        self.surface = LoadSurface()
        self.tuning = tuned_process()  # what `switchboard run` runs the engine in

    async def start(self) -> None:
        self.bot.add_surface(self.surface)
        await self.tuning.__aenter__()
        await self.bot.start()

    async def turn(self, conversation: str, text: str) -> str:
        return (await self.surface.send(self.bot, conversation, text)).kind

    async def recover(self, wait: float) -> list[str]:
        """Started on the state of a killed process: the answers the interrupted turns get within `wait` s."""
        delivered: list[str] = []
        done = asyncio.Event()

        class Watch:
            platform = "console"

            async def progress(self, turn: TurnRef, event: Progress) -> None:
                return None

            async def deliver(self, turn: TurnRef, reply: Reply) -> str:
                delivered.append(reply.text)
                done.set()
                return turn.id

            async def find_delivery(self, turn: TurnRef) -> str | None:
                return None

        self.bot.add_surface(Watch())  # instead of `start`: nothing of this process is timed
        await self.tuning.__aenter__()
        await self.bot.start()
        try:
            await asyncio.wait_for(done.wait(), wait)
        except TimeoutError:
            pass
        return delivered

    async def stop(self) -> None:
        await self.bot.stop()
        await self.tuning.__aexit__(None, None, None)


class SwitchboardConversations(Switchboard):
    """Switchboard on Responses with `[openai] threads = "conversations"`: a Conversation per thread."""

    name = "switchboard_conversations"
    threads = "conversations"


class SwitchboardChat(Switchboard):
    """Switchboard on the `chat` backend: threads kept in our SQLite and sent whole with every request."""

    name = "switchboard_chat"
    backend = "chat"


class Naive:
    name = "naive"

    def __init__(self, url: str, state_dir: Path) -> None:
        import openai

        from benchmarks import naive_bot

        self.module = naive_bot
        self.team = team(url, state_dir)
        self.client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
        self.previous: dict[str, str] = {}  # no persistence: the conversation is a variable
        self.pool = concurrent.futures.ThreadPoolExecutor(THREADS)

    async def start(self) -> None:
        return None

    def _turn(self, conversation: str, text: str) -> str:
        subs = {sub.name: sub for sub in self.team.subs}
        response = self.module.turn(self.client, self.team.proxy, subs, text, self.previous.get(conversation))
        self.previous[conversation] = response.id
        return "answer" if response.output_text else "failure"

    async def turn(self, conversation: str, text: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._turn, conversation, text)

    async def recover(self, wait: float) -> list[str]:
        return []  # nothing was kept: a restarted naive bot knows of no turn

    async def stop(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


class AgentsSDK:
    name = "agents"

    def __init__(self, url: str, state_dir: Path) -> None:
        from agents import Agent, ModelSettings, OpenAIResponsesModel, set_tracing_disabled
        from openai import AsyncOpenAI

        set_tracing_disabled(True)
        config = team(url, state_dir)
        self.client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
        self.db = str(state_dir / "agents.db")

        def agent(name: str, instructions: str, tools: list[Any]) -> Any:
            settings = ModelSettings(metadata={"agent": name}, parallel_tool_calls=True if tools else None)
            return Agent(name=name, instructions=instructions, tools=tools, model_settings=settings,
                         model=OpenAIResponsesModel(config.proxy.model, self.client))

        subs = [agent(sub.name, sub.instructions, []) for sub in config.subs]
        tools = [sub.as_tool(tool_name=f"ask_{sub.name}", tool_description=f"Ask the {sub.name} assistant.")
                 for sub in subs]
        self.proxy = agent(config.proxy.name, config.proxy.instructions, tools)
        self.sessions: dict[str, Any] = {}

    def session(self, conversation: str) -> Any:
        from agents import SQLiteSession

        if conversation not in self.sessions:
            self.sessions[conversation] = SQLiteSession(conversation, self.db)
        return self.sessions[conversation]

    async def start(self) -> None:
        return None

    async def turn(self, conversation: str, text: str) -> str:
        from agents import Runner

        result = await Runner.run(self.proxy, text, session=self.session(conversation))
        return "answer" if result.final_output else "failure"

    async def recover(self, wait: float) -> list[str]:
        return []  # the SDK keeps no record of a turn in progress, so a restarted process has nothing to resume

    async def pending_in_session(self, conversation: str) -> bool:
        """Whether the killed turn's user message reached the session (it would at least be in the history)."""
        items = await self.session(conversation).get_items()
        return bool(items) and items[-1].get("role") == "user"

    async def stop(self) -> None:
        for session in self.sessions.values():
            session.close()
        await self.client.close()


SYSTEMS: dict[str, type[Switchboard] | type[Naive] | type[AgentsSDK]] = {
    "switchboard": Switchboard, "switchboard_conversations": SwitchboardConversations,
    "switchboard_chat": SwitchboardChat, "naive": Naive, "agents": AgentsSDK,
}


def available() -> list[str]:
    """The systems this environment can run (the Agents SDK needs the `[bench]` extra)."""
    try:
        import agents  # noqa: F401
    except ImportError:
        return ["switchboard", "switchboard_conversations", "switchboard_chat", "naive"]
    return list(SYSTEMS)


def make(name: str, url: str, state_dir: Path) -> System:
    return SYSTEMS[name](url, state_dir)


def cpu_seconds() -> float:
    return time.process_time()
