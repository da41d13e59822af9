"""Shared helpers for engine tests: a team, a recording surface, and a Bot wired to an emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.backends.assistants import TAG_KEY
from bot.backends.responses import CHAIN_KEY, CHAIN_PREFIX
from bot.config import AgentConfig, Limits, TeamConfig
from bot.engine import Bot
from bot.types import Inbound, Progress, Reply, TurnRef
from emulator import Emulator

WAIT_SECONDS = 20.0
BACKENDS = ("responses", "chains", "assistants", "chat", "mixed")
# "chains": the Responses backend with `[openai] threads = "chains"` (threads are chains of stored responses).
# "mixed": one team on three providers (the proxy on Responses, the researcher on Assistants v2, the critic and the
# planner on Chat Completions), all served by the one emulator.
MIXED = {"proxy": "responses", "researcher": "assistants", "critic": "chat", "planner": "chat"}
RUN_CREATE_PATHS = {
    "responses": "/v1/responses", "assistants": "/v1/threads/*/runs", "chat": "/v1/chat/completions",
    "chains": "/v1/responses",
    "mixed": "/v1/responses",  # the proxy's
}

FAST_LIMITS = Limits(
    max_parallel=4,
    max_depth=1,
    retry_budget=6,
    run_timeout=60,
    turn_timeout=60,
    queued_timeout=0.5,
    lock_wait=2.0,
    backoff_base=0.01,
    backoff_max=0.05,
    poll_interval=0.02,
    stream_idle_timeout=5.0,
)


def backend_of(backend: str, agent: str) -> str:
    """The backend `agent` runs on in a test team built with `backend`."""
    if backend == "chains":
        return "responses"
    return MIXED[agent] if backend == "mixed" else backend


def team(base_url: str, db_path: str | Path, backend: str = "responses", **limits: Any) -> TeamConfig:
    def own(name: str) -> Any:
        return MIXED[name] if backend == "mixed" else None

    subs = tuple(
        AgentConfig(name=n, instructions=f"You are the {n}.", model="emu-1", description=f"The {n}.", backend=own(n))
        for n in ("researcher", "critic", "planner")
    )
    return TeamConfig(
        proxy=AgentConfig(name="proxy", instructions="You are the proxy.", model="emu-1", backend=own("proxy")),
        subs=subs,
        backend=backend_of(backend, "proxy"),  # type: ignore[arg-type]
        response_threads="chains" if backend == "chains" else "conversations",
        limits=dataclasses.replace(FAST_LIMITS, **limits),
        db_path=str(db_path),
        base_url=base_url,
        api_key="test-key",
    )


class RecordingSurface:
    """A surface that remembers everything; `find_delivery` looks in what was delivered, like a platform would."""

    platform = "console"

    def __init__(self) -> None:
        self.events: list[tuple[str, Progress]] = []
        self.deliveries: list[tuple[TurnRef, Reply]] = []
        self._changed = asyncio.Condition()

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        async with self._changed:
            self.events.append((turn.id, event))
            self._changed.notify_all()

    async def wait_event(self, kind: str, count: int = 1) -> list[Progress]:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.kinds(kind)) >= count)
        return self.kinds(kind)

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        async with self._changed:
            self.deliveries.append((turn, reply))
            self._changed.notify_all()
        return f"msg-{len(self.deliveries)}"

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return next((f"msg-{i + 1}" for i, (t, _) in enumerate(self.deliveries) if t.id == turn.id), None)

    async def wait_for(self, count: int) -> list[tuple[TurnRef, Reply]]:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.deliveries) >= count)
        return self.deliveries

    def replies(self) -> list[Reply]:
        return [r for _, r in self.deliveries]

    def kinds(self, kind: str) -> list[Progress]:
        return [e for _, e in self.events if getattr(e, "kind", None) == kind]


_counter = 0


def inbound(text: str, conversation: str = "console:test:c1", user: str = "u1", event_id: str | None = None) -> Inbound:
    global _counter
    _counter += 1
    return Inbound(
        platform="console",
        event_id=event_id or f"evt-{_counter}",
        conversation=conversation,
        channel="console:test",
        user=user,
        text=text,
    )


@asynccontextmanager
async def running_bot(cfg: TeamConfig) -> AsyncIterator[tuple[Bot, RecordingSurface]]:
    bot = Bot.from_config(cfg)
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        yield bot, surface


def item_text(item: dict[str, Any]) -> str:
    """The text of a message item as the emulator stored it (string content or a list of text parts)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


# ---- a backend-neutral view of the emulator's state (responses and Assistants runs alike) ----


@dataclass(frozen=True)
class RemoteRun:
    """One response or run as the emulator saw it; `thread` is its conversation or thread id."""

    id: str
    agent: str
    status: str
    thread: str | None
    created_tick: int
    finished_tick: int | None
    record: Any


def remote_runs(emu: Emulator, agent: str | None = None) -> list[RemoteRun]:
    """Every response and run (one emulator serves both APIs; a test uses one), oldest first."""
    found = [
        RemoteRun(r.id, r.agent, r.status, r.conversation_id or _chain_of(r), r.created_tick, r.finished_tick, r)
        for r in emu.responses.values()
    ] + [RemoteRun(r.id, r.agent, r.status, r.thread_id, r.created_tick, r.finished_tick, r) for r in emu.runs.values()
    ] + [
        RemoteRun(r.id, r.agent, r.status, r.thread, r.created_tick, r.finished_tick, r)
        for r in emu.chat_completions.values() if not r.agent.endswith("/summary")
    ]
    return sorted((r for r in found if agent is None or r.agent == agent), key=lambda r: r.created_tick)


def _chain_of(response: Any) -> str | None:
    """The thread a chained response belongs to, as the backend names it in the response's metadata."""
    metadata = response.params.get("metadata") or {}
    return metadata.get(CHAIN_KEY)


def run_creates(emu: Emulator, backend: str) -> list[Any]:
    """The log entries of requests that create a run (POST /v1/responses, POST /v1/threads/{id}/runs), in the order
    they started (the log is in the order they ended, which for a stream is when it closed)."""
    pattern = RUN_CREATE_PATHS[backend]
    found = [e for e in emu.log if e.method == "POST" and fnmatch.fnmatchcase(e.path, pattern)]
    return sorted(found, key=lambda e: e.tick_start)


def thread_texts(emu: Emulator, thread_id: str) -> list[str]:
    """The message texts of a conversation or thread, in order."""
    if thread_id in emu.conversations:
        return [item_text(i) for i in emu.conversations[thread_id].items if i.get("type") == "message"]
    if thread_id.startswith(CHAIN_PREFIX):  # ours: what the chain's newest completed response saw and answered
        chained = [r for r in emu.responses.values() if _chain_of(r) == thread_id and r.status == "completed"]
        last = max(chained, key=lambda r: r.finished_tick or 0)
        return [*last.seen_texts, *(item_text(i) for i in last.output if i.get("type") == "message")]
    if thread_id.startswith("chat_"):  # ours, not the server's: what its newest completion was sent, and answered
        last = max((r for r in emu.chat_completions.values() if r.thread == thread_id), key=lambda r: r.created_tick)
        texts = [item_text(m) for m in last.messages if m.get("role") in ("user", "assistant") and m.get("content")]
        return texts + ([last.content] if last.status == "completed" and last.content else [])
    return [m.text for m in emu.threads[thread_id].messages]


def run_input_texts(emu: Emulator, run: RemoteRun) -> list[str]:
    """The user messages a run was given: a response's input items, or the messages posted with a run."""
    if run.id in emu.responses:
        return [item_text(i) for i in run.record.input_items if i.get("type") == "message"]
    if run.id in emu.chat_completions:  # the user messages after the thread's last answer
        messages = run.record.messages
        answered = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
        return [item_text(m) for m in messages[answered + 1 :] if m.get("role") == "user"]
    key = run.record.metadata.get("input")
    return [m.text for m in emu.threads[run.thread].messages if str(m.metadata.get(TAG_KEY, "")).startswith(f"{key}.")]


def delete_remote_thread(emu: Emulator, thread_id: str) -> None:
    """Delete a conversation or thread behind the engine's back; a chain of responses: every response of it."""
    if thread_id.startswith(CHAIN_PREFIX):
        for response in list(emu.responses.values()):
            if _chain_of(response) == thread_id:
                emu.delete_response(response.id)
    elif thread_id in emu.conversations:
        emu.faults.delete_conversation(thread_id)
    else:
        emu.faults.delete_thread(thread_id)


# ---- handoffs (issue 14): a team that moves one shared thread between assistants ----


def handoff_team(base_url: str, db_path: str | Path, backend: str = "responses", **limits: Any) -> TeamConfig:
    """greeter (the proxy, entry) may hand to editor; editor to greeter or layout, and asks the researcher;
    layout back to editor. The researcher is a sub-assistant (its own thread), asked by greeter and editor."""

    def member(name: str, handoffs: tuple[str, ...], delegates: tuple[str, ...] = ()) -> AgentConfig:
        return AgentConfig(name=name, instructions=f"You are the {name}.", model="emu-1", description=f"The {name}.",
                           handoffs=handoffs, delegates=delegates)

    return TeamConfig(
        proxy=member("greeter", ("editor",)),
        subs=(member("editor", ("greeter", "layout"), ("researcher",)), member("layout", ("editor",)),
              member("researcher", ())),
        backend=backend_of(backend, "greeter"),  # type: ignore[arg-type]
        response_threads="chains" if backend == "chains" else "conversations",
        limits=dataclasses.replace(FAST_LIMITS, **limits),
        db_path=str(db_path),
        base_url=base_url,
        api_key="test-key",
    )


def instructions_of(run: RemoteRun) -> str:
    """The instructions a response, run or chat completion was sent with (a run's include additional ones)."""
    if hasattr(run.record, "input_items"):  # a response
        return str(run.record.params.get("instructions") or "")
    if hasattr(run.record, "messages"):
        return "\n".join(item_text(m) for m in run.record.messages if m.get("role") == "system")
    return str(run.record.instructions)
