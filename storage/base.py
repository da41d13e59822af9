"""What the engine keeps, and the `Store` protocol a database backend implements.

Records are small frozen dataclasses. Every write is durable when the awaited call returns, so the engine can
record an intent, act, and record the outcome, and a crash between any two steps is recoverable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

InboxState = Literal["pending", "in_turn", "answered", "notified"]
TurnState = Literal["received", "running", "awaiting_tools", "replied", "delivering", "delivered"]
UNFINISHED_TURN_STATES: tuple[TurnState, ...] = ("received", "running", "awaiting_tools", "replied", "delivering")
ReplyKind = Literal["answer", "failure", "notice"]


class StoreError(Exception):
    """The database refused a write or read (read-only file, disk full, corruption). The message says which."""


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    key: str
    platform: str
    channel: str
    started_by: str
    generation: int
    main_thread: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class InboxMessage:
    event_id: str
    conversation: str
    platform: str
    channel: str
    user: str
    text: str
    route: Mapping[str, Any]
    received_at: float
    state: InboxState = "pending"
    turn_id: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    id: str
    conversation: str
    generation: int
    state: TurnState
    created_at: float
    updated_at: float
    reply_kind: ReplyKind | None = None
    reply_text: str | None = None
    delivered_ref: str | None = None
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def new(cls, conversation: str, generation: int, state: TurnState = "received",
            reply_kind: ReplyKind | None = None, reply_text: str | None = None) -> TurnRecord:
        now = time.time()
        return cls(
            id="turn_" + uuid.uuid4().hex[:24],
            conversation=conversation,
            generation=generation,
            state=state,
            created_at=now,
            updated_at=now,
            reply_kind=reply_kind,
            reply_text=reply_text,
        )


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One remote run/response. `scope` names the agent invocation inside a turn ("proxy", "proxy/call_1", ...);
    the newest record of a scope is the one to resume. `input` is what the run was given, so it can be recreated."""

    remote_id: str
    turn_id: str
    scope: str
    agent: str
    thread_id: str
    status: str
    attempt: int
    input: list[dict[str, Any]]
    last_seq: int | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    turn_id: str
    scope: str
    call_id: str
    name: str
    arguments: str
    output: str | None = None
    ok: bool | None = None


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    role: Literal["user", "assistant"]
    text: str
    turn_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    platform: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: str = ""


@dataclass(slots=True)
class TurnUpdate:
    state: TurnState | None = None
    reply_kind: ReplyKind | None = None
    reply_text: str | None = None
    delivered_ref: str | None = None
    add_retries: int = 0
    add_input_tokens: int = 0
    add_output_tokens: int = 0


class Store(Protocol):
    """Persistence for the engine. One implementation per database (see `storage.sqlite`)."""

    schema_version: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def writable(self) -> bool:
        """Whether the database accepts writes right now (for health checks)."""

    # conversations and their remote threads
    async def ensure_conversation(
        self, key: str, platform: str, channel: str, started_by: str
    ) -> ConversationRecord: ...
    async def get_conversation(self, key: str) -> ConversationRecord | None: ...
    async def conversations(self, channel: str | None = None) -> list[ConversationRecord]: ...
    async def set_main_thread(self, key: str, generation: int, thread_id: str | None) -> None: ...
    async def bump_generation(self, key: str) -> int: ...
    async def get_sub_thread(self, key: str, generation: int, path: str) -> str | None: ...
    async def set_sub_thread(self, key: str, generation: int, path: str, thread_id: str) -> None: ...
    async def all_thread_ids(self, key: str, generation: int) -> list[str]: ...

    # inbox
    async def add_inbound(self, message: InboxMessage) -> bool:
        """Store the message, creating its conversation on first sight. False: the event id was seen before."""
    async def pending_inbound(self, conversation: str) -> list[InboxMessage]: ...
    async def conversations_with_pending(self) -> list[str]: ...
    async def claim_inbound(self, event_ids: list[str], turn_id: str) -> None: ...
    async def inbound_for_turn(self, turn_id: str) -> list[InboxMessage]: ...
    async def set_inbound_state(self, event_ids: list[str], state: InboxState) -> None: ...

    # turns
    async def create_turn(self, turn: TurnRecord) -> None: ...
    async def start_turn(self, turn: TurnRecord, messages: list[InboxMessage], thread_path: str) -> None:
        """Create the turn, claim its messages and add them to the thread's transcript, in one transaction."""
    async def record_reply(self, turn: TurnRecord, update: TurnUpdate, thread_path: str) -> None:
        """Apply `update` (which carries the reply) and, for an answer, add it to the transcript, together."""
    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        """Mark the turn delivered and its messages answered, together."""
    async def get_turn(self, turn_id: str) -> TurnRecord | None: ...
    async def update_turn(self, turn_id: str, update: TurnUpdate) -> None: ...
    async def unfinished_turns(self, conversation: str | None = None) -> list[TurnRecord]: ...

    # runs and tool calls
    async def record_run(self, run: RunRecord) -> None: ...
    async def update_run(self, remote_id: str, *, status: str, last_seq: int | None = None) -> None: ...
    async def latest_run(self, turn_id: str, scope: str) -> RunRecord | None: ...
    async def active_runs(self, turn_id: str | None = None) -> list[RunRecord]: ...
    async def record_tool_call(self, call: ToolCallRecord) -> None: ...
    async def finish_tool_call(self, turn_id: str, scope: str, call_id: str, output: str, ok: bool) -> None: ...
    async def get_tool_call(self, turn_id: str, scope: str, call_id: str) -> ToolCallRecord | None: ...

    # transcript: the local truth a remote thread can be rebuilt from
    async def append_transcript(
        self, key: str, generation: int, thread_path: str, entry: TranscriptEntry
    ) -> None: ...
    async def transcript(self, key: str, generation: int, thread_path: str) -> list[TranscriptEntry]: ...
    async def mark_transcript_reset(self, key: str, generation: int) -> None: ...

    # audit and cached provider objects
    async def add_audit(self, entry: AuditEntry) -> None: ...
    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]: ...
    async def get_agent(self, backend: str, name: str) -> tuple[str, str] | None: ...
    async def set_agent(self, backend: str, name: str, remote_id: str, content_hash: str) -> None: ...
