"""What the engine keeps, and the `Store` protocol a database backend implements.

Records are small frozen dataclasses. Every write is durable when the awaited call returns, so the engine can
record an intent, act, and record the outcome, and a crash between any two steps is recoverable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from storage.handoffs import Applied, HandoffState, Transfer

InboxState = Literal["pending", "in_turn", "answered", "notified"]
TurnState = Literal["received", "running", "awaiting_tools", "replied", "delivering", "delivered"]
UNFINISHED_TURN_STATES: tuple[TurnState, ...] = ("received", "running", "awaiting_tools", "replied", "delivering")
ReplyKind = Literal["answer", "failure", "notice"]


class StoreError(Exception):
    """The database refused a write or read (read-only file, disk full, corruption). The message says which."""


class LeaseLost(StoreError):
    """Several instances on one database: this one no longer owns the conversation (its lease expired and another
    instance took it over), so the write was refused whole. The turn is the new owner's to finish; drop it."""


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


def new_turn_id() -> str:
    return "turn_" + uuid.uuid4().hex[:24]


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
            reply_kind: ReplyKind | None = None, reply_text: str | None = None, id: str | None = None) -> TurnRecord:
        now = time.time()
        return cls(
            id=id or new_turn_id(),
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
class RunTokens:
    """A run's usage as its provider reported it; `cached_input` is the part of `input` served from its cache."""

    input: int = 0
    cached_input: int = 0
    output: int = 0


@dataclass(frozen=True, slots=True)
class TokenRow:
    """The usage of one assistant's runs in one turn."""

    conversation: str
    turn_id: str
    agent: str
    runs: int
    tokens: RunTokens


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
class ChatMessage:
    """One message of a `chat` backend thread, in Chat Completions form (`role`, `content`, `tool_calls`...)."""

    id: int
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatThread:
    """A `chat` thread as a request sees it: the newest summary of its folded messages (if any) and every
    message after what that summary covers, oldest first."""

    summary: str | None
    summary_upto: int
    messages: list[ChatMessage]


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """A thread the `responses` backend keeps as a chain of stored responses (`previous_response_id`) instead of a
    Conversation: the response its next run chains from, and the calls that run must answer "cancelled"."""

    thread_id: str
    head: str | None  # None until the thread's first response completes
    cancelled: tuple[str, ...] = ()  # call ids of the head's function calls given up on (abandoned or stuck)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    platform: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One bucket's usage on one UTC day (`YYYY-MM-DD`). Buckets are named by the engine: ``bot``,
    ``user:<platform>:<id>``, ``channel:<key>``, ``conversation:<key>``. `granted_*` is what admins added on top of
    the day's budget."""

    day: str
    bucket: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    granted_tokens: int = 0
    granted_cost: float = 0.0
    cached_input_tokens: int = 0  # of `input_tokens`, served from the provider's prompt cache

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What `forget_user` deleted (counts only: never the content), the conversations it touched, the provider
    threads whose local pointers it cleared and the remote runs of the deleted turns, as (run id, thread id): the
    caller deletes both at the provider."""

    messages: int
    turns: int
    conversations: tuple[str, ...]
    threads: tuple[str, ...]
    runs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished records are kept, in days (0: forever). What a thread rebuild needs (the transcript of
    each conversation's live generation) and unfinished work are never pruned."""

    inbox_days: float = 30.0  # answered inbox rows, and their delivered turns (redelivery is deduplicated until then)
    runs_days: float = 30.0  # runs and tool calls of delivered turns
    transcript_days: float = 90.0  # transcript entries of reset or earlier generations
    audit_days: float = 365.0  # admin audit entries
    usage_days: float = 400.0  # daily usage rows per user, channel and bot (budgets look at today only)


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows deleted by one `prune`, per table."""

    inbox: int = 0
    turns: int = 0
    runs: int = 0
    tool_calls: int = 0
    transcript: int = 0
    audit: int = 0
    usage: int = 0
    handoffs: int = 0  # transfers and turn authors (issue 14) of turns already pruned

    @property
    def total(self) -> int:
        return (self.inbox + self.turns + self.runs + self.tool_calls + self.transcript + self.audit + self.usage
                + self.handoffs)


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
    """Persistence for the engine. One implementation per database (see `storage.sqlite`).

    Every write is atomic: it has landed (and survives the process dying) when its await returns, and one whose
    caller is cancelled has happened either whole or not at all, never in part. "In one transaction" below means
    several rows change together or none do. A read sees every write called before it."""

    schema_version: int

    # ---- lifecycle ----

    async def open(self) -> None:
        """Open the database, creating it if missing, and migrate it to `schema_version` (each migration atomic).
        StoreError, with the store left closed, when the folder is missing, the file cannot be opened, or its
        schema is newer than `schema_version`."""

    async def close(self) -> None:
        """Close once every operation already called has finished. Closing a closed store does nothing."""

    async def writable(self) -> bool:
        """Whether a write would succeed now (for health checks). Writes nothing; False rather than raising."""

    # ---- inbox: each message from a platform, until its turn is answered ----

    async def add_inbound(self, message: InboxMessage) -> bool:
        """Store the message, after every message stored before it, and create its conversation on first sight, in
        one transaction. Idempotent on the event id: False for an id seen before, and no message is stored."""

    async def pending_inbound(self, conversation: str) -> list[InboxMessage]:
        """The conversation's messages no turn has claimed yet, in arrival order."""

    async def conversations_with_pending(self) -> list[str]:
        """Keys of the conversations that have a pending message, in no set order."""

    async def claim_inbound(self, event_ids: list[str], turn_id: str) -> None:
        """Give those messages that are still pending to the turn (state `in_turn`), in one transaction. Ids that
        are unknown or already claimed are left alone, so repeating it changes nothing."""

    async def inbound_for_turn(self, turn_id: str) -> list[InboxMessage]:
        """The messages the turn claimed, in arrival order, whatever their state now."""

    # ---- turns and runs: a turn answers its messages; runs and tool calls are its work at the provider ----

    async def start_turn(self, turn: TurnRecord, messages: list[InboxMessage], thread_path: str) -> None:
        """In one transaction: create the turn (its id, conversation, generation, state and times; no reply),
        claim those of `messages` still pending, and append each of `messages` to the thread's transcript as a
        user entry. An existing turn id raises StoreError and changes nothing."""

    async def create_turn(self, turn: TurnRecord, claim: Sequence[str] = ()) -> None:
        """In one transaction: create the turn as given, reply included (a notice), and claim the still-pending
        inbox messages among `claim` for it. An existing turn id raises and changes nothing."""

    async def record_reply(self, turn: TurnRecord, update: TurnUpdate, thread_path: str) -> None:
        """In one transaction: apply `update` (which carries the reply) as `update_turn` does and, for an answer
        with text, append it to the thread's transcript as an assistant entry. Not idempotent: twice appends
        twice. An unknown turn id raises nothing (no turn changes; the transcript entry is still appended)."""

    async def finish_delivery(self, turn_id: str, delivered_ref: str, event_ids: list[str]) -> None:
        """In one transaction: the turn becomes `delivered` with `delivered_ref`, and the messages `answered`.
        Idempotent: repeating it sets the same values again."""

    async def update_turn(self, turn_id: str, update: TurnUpdate) -> None:
        """Apply `update` atomically: each field set replaces, each `add_*` adds (so repeating adds again), and
        `updated_at` becomes now. StoreError if the turn does not exist."""

    async def get_turn(self, turn_id: str) -> TurnRecord | None: ...

    async def unfinished_turns(self, conversation: str | None = None) -> list[TurnRecord]:
        """Turns in `UNFINISHED_TURN_STATES` (all, or the conversation's), oldest first."""

    async def record_run(self, run: RunRecord) -> None:
        """Record a run by its remote id, replacing any record with that id (idempotent); `created_at` 0 is now."""

    async def update_run(self, remote_id: str, *, status: str, last_seq: int | None = None,
                         tokens: RunTokens | None = None) -> None:
        """Set the run's status, and its last stream position and the provider's usage so far when given (the
        figures replace earlier ones: a run's usage is cumulative). An unknown remote id changes nothing."""

    async def token_rows(self, conversation: str | None = None) -> list[TokenRow]:
        """The recorded usage of runs (all, or the conversation's), summed per turn and assistant, oldest turn
        first."""

    async def latest_run(self, turn_id: str, scope: str) -> RunRecord | None:
        """The newest run of the scope in the turn (latest `created_at`, then the last recorded): the one to
        resume."""

    async def active_runs(self, turn_id: str | None = None) -> list[RunRecord]:
        """Runs (all, or the turn's) whose status is not terminal, in no set order."""

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        """Record a call the model asked for (name and arguments). Idempotent: a call already recorded under the
        same turn, scope and call id is kept as it is, output included."""

    async def finish_tool_call(self, turn_id: str, scope: str, call_id: str, output: str, ok: bool) -> None:
        """Set the call's output and outcome (replacing any). An unknown call changes nothing."""

    async def get_tool_call(self, turn_id: str, scope: str, call_id: str) -> ToolCallRecord | None: ...

    # ---- threads and transcript: a conversation's provider objects, and the local truth to rebuild them from ----

    async def get_conversation(self, key: str) -> ConversationRecord | None: ...

    async def set_main_thread(self, key: str, generation: int, thread_id: str | None) -> None:
        """Set the conversation's main thread, only while it is still at `generation`: a thread made before a
        reset is never attached after it."""

    async def get_sub_thread(self, key: str, generation: int, path: str) -> str | None: ...

    async def set_sub_thread(self, key: str, generation: int, path: str, thread_id: str) -> None:
        """Set the sub-assistant thread at `path` for that generation; the last one set wins."""

    async def bump_generation(self, key: str) -> int:
        """Start the conversation afresh: generation + 1 and no main thread, atomically; then return the
        generation read back (0 for an unknown conversation, which is not created)."""

    async def append_transcript(self, key: str, generation: int, thread_path: str, entry: TranscriptEntry) -> None:
        """Append the entry to the thread's transcript. Not idempotent: twice appends twice."""

    async def transcript(self, key: str, generation: int, thread_path: str) -> list[TranscriptEntry]:
        """The thread's entries not marked reset, in the order appended."""

    async def mark_transcript_reset(self, key: str, generation: int) -> None:
        """Mark all of the generation's transcript reset, atomically: kept, but no longer returned by `transcript`.
        Idempotent."""

    async def get_agent(self, backend: str, name: str) -> tuple[str, str] | None:
        """The provider object cached for the agent: (remote id, hash of the definition it was made from)."""

    async def set_agent(self, backend: str, name: str, remote_id: str, content_hash: str) -> None:
        """Cache the agent's provider object, replacing any; the last one set wins."""

    # ---- chat threads: the `chat` backend's threads live here, not at the provider ----

    async def create_chat_thread(self, thread_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """Create the thread with `messages` (a seed), in one transaction. An existing id raises StoreError."""

    async def chat_thread(self, thread_id: str) -> ChatThread | None:
        """The thread (newest summary and the messages after it), or None when it does not exist."""

    async def delete_chat_thread(self, thread_id: str) -> None:
        """Forget the thread, its messages and summaries. Deleting an unknown thread does nothing."""

    async def finish_chat_run(
        self, run_id: str, thread_id: str, messages: Sequence[Mapping[str, Any]], state: Mapping[str, Any]
    ) -> bool:
        """In one transaction: record the run's final `state` and append `messages` (its input and answer) to the
        thread. Idempotent on the run id: False, and nothing appended, when the run was already recorded."""

    async def chat_run(self, run_id: str) -> dict[str, Any] | None:
        """The final state recorded for the run, or None (never finished, or unknown)."""

    async def add_chat_summary(self, thread_id: str, upto_id: int, text: str) -> None:
        """Store a summary of the thread's messages up to and including id `upto_id` (the newest one wins)."""

    async def thread_provider(self, thread_id: str) -> str | None:
        """The provider a remote thread was created on (teams that mix providers), or None if not recorded."""

    async def set_thread_provider(self, thread_id: str, provider: str) -> None:
        """Record the provider a remote thread was created on (replacing any)."""

    # ---- response chains: the `responses` backend's chained threads (ids only, no text) ----

    async def create_chain(self, thread_id: str) -> None:
        """Create an empty chain (no head). An existing id raises StoreError."""

    async def chain(self, thread_id: str) -> ChainRecord | None:
        """The chain, or None when it does not exist."""

    async def advance_chain(self, thread_id: str, previous: str | None, head: str) -> bool:
        """Compare-and-set: move the head from `previous` to `head` and clear `cancelled`. True when done, or when
        the head already is `head` (idempotent); False, changing nothing, when the head is something else or the
        chain does not exist."""

    async def cancel_chain_calls(self, thread_id: str, call_ids: Sequence[str]) -> None:
        """Add `call_ids` to `cancelled` (kept in order, without repeats). Unknown thread: nothing."""

    async def delete_chain(self, thread_id: str) -> None:
        """Forget the chain. Unknown thread: nothing."""

    # ---- admin and audit ----

    async def conversations(self, channel: str | None = None) -> list[ConversationRecord]:
        """All conversations, or the channel's, oldest first."""

    async def add_audit(self, entry: AuditEntry) -> None:
        """Append the entry to the audit trail."""

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        """The last `limit` audit entries, newest first."""

    # ---- rate limits, usage and deletion (issue 16) ----

    async def admit_inbound(self, message: InboxMessage, quotas: Mapping[str, int], minute: int) -> str:
        """`add_inbound` under message-rate quotas (bucket name -> most messages per minute), in one transaction
        that concurrent calls cannot interleave: "duplicate" for an event id seen before (nothing changes); else the
        name of the first bucket, in `quotas` order, already at its limit in `minute` (nothing stored, no count
        changes); else "" after storing the message as `add_inbound` does and adding one to each bucket's count in
        `minute`. Counts of minutes before `minute - 1` may be dropped."""

    async def add_usage(self, day: str, buckets: Sequence[str], *, input_tokens: int = 0, output_tokens: int = 0,
                        cost: float = 0.0, granted_tokens: int = 0, granted_cost: float = 0.0,
                        cached_input_tokens: int = 0) -> None:
        """Add the amounts to each bucket's row for `day` (created at zero on first use), in one transaction."""

    async def usage_on(self, day: str, buckets: Sequence[str] | None = None) -> list[UsageRow]:
        """The day's rows (all, or those of `buckets`; a bucket without a row is left out), by bucket name."""

    # ---- handoffs (issue 14): who holds each conversation generation's main thread, its state, every transfer ----

    async def handoff_state(self, conversation: str, generation: int) -> HandoffState:
        """The generation's active assistant (None: the team's entry) and key/value state."""
        ...

    async def apply_transfer(self, transfer: Transfer, max_per_turn: int) -> Applied:
        """In one transaction: switch the active assistant and merge the state, once per (turn, call) ("repeated"
        for a second call with the same ids, "over_limit" past `max_per_turn` model transfers in the turn; neither
        changes anything). An admin's transfer (no turn) always applies."""
        ...

    async def transfers(self, conversation: str, generation: int) -> list[Transfer]: ...

    async def record_turn_agent(self, turn_id: str, conversation: str, generation: int, agent: str) -> None: ...

    async def turn_agents(self, conversation: str, generation: int) -> dict[str, str]:
        """turn id -> the assistant that answered it."""
        ...

    async def forget_user(self, user: str, platform: str | None = None, dry_run: bool = False) -> ForgetReport:
        """In one transaction, delete every trace of what the user wrote: their inbox messages, every turn that
        answered one (its reply, runs, tool calls and transcript entries on every thread), and clear the
        provider-thread pointers (main and sub-assistant) of each conversation they wrote in, so the next turn
        rebuilds them from the transcript that remains. Other people's messages claimed by a deleted turn that was
        not delivered go back to `pending` (to be answered anew). Conversations they started keep no user id.
        Deleted content is overwritten on disk, not left in free pages. `platform` None: that user id on every
        platform. `dry_run`: change nothing, report what would go."""

    # ---- retention ----

    async def prune(self, policy: RetentionPolicy, now: float | None = None) -> PruneCounts:
        """Delete what `policy` no longer keeps, as of `now` (default: the current time): answered or notified inbox
        rows and delivered turns older than `inbox_days` (by arrival and last update), runs and tool calls of
        delivered turns older than `runs_days`, transcript entries marked reset or of an earlier generation older
        than `transcript_days`, audit entries older than `audit_days`. Never an unfinished turn, its messages, runs
        or tool calls, nor the live generation's transcript. Each table in its own transaction; idempotent."""
