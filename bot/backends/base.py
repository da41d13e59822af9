"""The provider seam. A backend maps one provider API onto these few operations and normalised states; the
supervisor and orchestrator only ever see what is defined here.

Vocabulary: a *thread* is the memory of one agent in one conversation (on the Responses API a chain of stored
responses or a Conversation, a thread on Assistants v2, ours in the store on `chat`); a *run* is one remote execution
on a thread (a response / a run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.config import AgentConfig
from bot.errors import SwitchboardError
from bot.types import Usage

RunStatus = Literal[
    "queued", "in_progress", "requires_action", "cancelling", "completed", "failed", "cancelled", "expired",
    "incomplete",
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
# Statuses in which the run waits for us: the supervisor stops watching and the orchestrator acts.
SETTLED: frozenset[str] = TERMINAL | {"requires_action"}


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    output: str


# What a run is given. Stored as JSON in the runs table so a run can be recreated after a crash.
@dataclass(frozen=True, slots=True)
class RunInput:
    messages: tuple[str, ...] = ()  # new user messages for the thread
    results: tuple[ToolResult, ...] = ()  # tool results for calls made by an earlier run on this thread

    def to_json(self) -> list[dict[str, Any]]:
        return [{"type": "message", "text": m} for m in self.messages] + [
            {"type": "result", "call_id": r.call_id, "name": r.name, "output": r.output} for r in self.results
        ]

    @classmethod
    def from_json(cls, items: Sequence[dict[str, Any]]) -> RunInput:
        return cls(
            messages=tuple(i["text"] for i in items if i["type"] == "message"),
            results=tuple(
                ToolResult(i["call_id"], i["name"], i["output"]) for i in items if i["type"] == "result"
            ),
        )


def results_as_text(results: Sequence[ToolResult]) -> str:
    """Tool results handed over as a message, for a run on a thread that never saw the calls they answer."""
    lines = ["Results of the tools you called earlier (their original run ended before it received them):"]
    lines += [f"- {r.name} (call {r.call_id}): {r.output}" for r in results]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RunState:
    """A normalised snapshot of a run. `tool_calls` are set when status is requires_action."""

    id: str
    thread_id: str
    status: RunStatus
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    incomplete_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_estimated: bool = False  # the provider reported no usage (some chat servers): `usage` is our estimate
    last_seq: int | None = None
    poll_after: float | None = None  # seconds the provider asks pollers to wait before the next retrieve

    @property
    def settled(self) -> bool:
        return self.status in SETTLED


@dataclass(frozen=True, slots=True)
class Delta:
    """Streamed output text of the run. Empty text only says the stream is alive: events arrived that the reader
    passes over (`RunRequest.text_wanted`), which must not look like a silent stream."""

    text: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run's state changed (created, status change, settled)."""

    state: RunState


RunEvent = Delta | Snapshot


@dataclass(frozen=True, slots=True)
class TranscriptItem:
    role: Literal["user", "assistant"]
    text: str


@dataclass(slots=True)
class RunRequest:
    thread_id: str
    agent: AgentConfig
    tools: list[dict[str, Any]]  # function tools for delegation + the agent's own provider tools
    input: RunInput
    metadata: dict[str, str] = field(default_factory=dict)
    # Handoffs: what this run is told besides the agent's own instructions (already appended to
    # `agent.instructions`; backends whose assistants keep their instructions remotely send it per run).
    briefing: str = ""
    # False: nobody reads this run's streamed text (a sub-assistant's answer is used whole), so a backend may leave
    # its text events unparsed
    text_wanted: bool = True


# ---- errors: every backend raises only these (plus StoreError from storage) ----


class BackendError(SwitchboardError):
    """Base class. `user_text` is safe to show to a user; the message may carry provider details."""

    user_text = "The AI provider returned an error."


#: `Transient.reason` when nothing accepted the connection: no request reached the provider, so the supervisor keeps
#: retrying in the background (the turn timeout bounds it) without spending the retry budget
UNREACHABLE = "unreachable"


class Transient(BackendError):
    """Worth retrying after `retry_after` seconds (None: use our backoff): 5xx, 429, timeouts, connection errors."""

    def __init__(self, message: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class Permanent(BackendError):
    """Retrying will not help (invalid request, auth, invalid_prompt)."""

    def __init__(self, message: str, reason: str, user_text: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        if user_text:
            self.user_text = user_text


class ThreadLocked(BackendError):
    """Another run is active on the thread. `holder` is its id when the provider says so."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class ThreadGone(BackendError):
    """The thread/conversation no longer exists remotely (deleted, 404)."""


class RunGone(BackendError):
    """The run/response no longer exists remotely."""


class StuckToolCall(BackendError):
    """The thread ends in a tool call that never got an output; every new run on it fails until it is answered."""

    def __init__(self, message: str, call_id: str) -> None:
        super().__init__(message)
        self.call_id = call_id


class OutputsRejected(BackendError):
    """Tool outputs could not be attached to the run (it expired or ended, or the call is unknown)."""


class StreamDropped(BackendError):
    """The event stream ended before the run settled. `run_id` is known if the run was created."""

    def __init__(self, message: str, run_id: str | None = None, last_seq: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.last_seq = last_seq


class RunStream(Protocol):
    """Events of one run. `run_id` is None until the provider confirmed creation."""

    @property
    def run_id(self) -> str | None: ...

    def __aiter__(self) -> AsyncIterator[RunEvent]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    name: str
    supports_resume: bool  # a dropped stream can be resumed from a sequence number

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create_thread(self, seed: Sequence[TranscriptItem], metadata: dict[str, str]) -> str: ...
    async def delete_thread(self, thread_id: str) -> None: ...

    async def start(self, request: RunRequest) -> RunStream: ...
    async def submit(self, state: RunState, request: RunRequest) -> RunStream: ...
    async def resume(self, run_id: str, thread_id: str, after_seq: int) -> RunStream: ...
    async def retrieve(self, run_id: str, thread_id: str) -> RunState: ...
    async def cancel(self, run_id: str, thread_id: str) -> None: ...
    async def answer_stuck_calls(self, thread_id: str, call_id: str) -> None:
        """Give `call_id`, and every other function call at the thread's tail still without an output, a
        "cancelled" output, in one write: the thread takes new runs again."""
        ...

    async def abandon(self, state: RunState) -> None:
        """`state` (requires_action) will never get its outputs (its turn failed or was stopped): leave its thread
        ready for the next run, rather than let that run find it stuck or locked."""
        ...
    async def active_runs(self, thread_id: str) -> list[str]: ...
    async def delete_run(self, run_id: str, thread_id: str) -> None:
        """Delete what the provider keeps of a run apart from its thread (a stored response: its input and output);
        nothing where deleting the thread deletes it all."""
        ...

    async def read_thread(self, thread_id: str, limit: int) -> list[TranscriptItem] | None:
        """The thread's newest `limit` user and assistant messages, oldest first, as the provider holds them (what
        a fork copies); None when the provider keeps no thread (`chat`: the local transcript is the thread)."""
        ...

    async def lost_create(self, request: RunRequest) -> RunState | None:
        """After a start/submit of `request` whose answer never came: the settled run it became, when the provider
        shows that it took effect; None when it did not, or cannot be told (then `request` is sent again)."""
        ...
