"""The contract between the engine and the platform adapters.

An adapter turns a platform event into an `Inbound`, hands it to `Bot.accept`, and implements `Surface` so the
engine can show progress and deliver the reply. Nothing here knows about Slack, Discord or OpenAI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot.errors import SwitchboardError

Platform = Literal["slack", "discord", "console"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One user message, as an adapter hands it to the engine.

    `event_id` must be stable across platform retries (Slack `event_id`/`client_msg_id`, Discord message or
    interaction id): the engine answers each event id at most once.
    `conversation` is the key of the conversation (main thread) this message belongs to, unique across platforms,
    e.g. ``slack:C123:1700000000.000100`` or ``discord:987654321``. `channel` groups conversations for channel-wide
    admin actions, e.g. ``slack:C123``. `route` is whatever the adapter needs later to post into the right place
    (channel id, thread ts, interaction token...); it must be JSON-serialisable because it is stored.
    """

    platform: Platform
    event_id: str
    conversation: str
    channel: str
    user: str
    text: str
    route: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)
    #: for the access lists: the author's roles (Discord role ids, Slack user group ids), whether the message is a
    #: direct message, and whether the platform itself calls the author an admin (Discord Manage Server)
    roles: tuple[str, ...] = ()
    dm: bool = False
    platform_admin: bool = False


class InvalidInbound(SwitchboardError, ValueError):
    """`Bot.accept` refused the message (empty, too long, malformed); the text is fit to show the user."""


class Refused(InvalidInbound):
    """`Bot.accept` refused the message by policy (access lists, a rate limit or a budget): nothing was stored, no
    run starts, the refusal is audited, and the text (one short, polite sentence) is for its author only.
    `reason` is machine-readable, e.g. ``blocked_user`` or ``limit:user_messages_per_minute``."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `Bot.accept` returns. `duplicate` means the event id was seen before: nothing new will happen."""

    event_id: str
    conversation: str
    duplicate: bool = False
    queued_behind_turn: bool = False


@dataclass(frozen=True, slots=True)
class TurnRef:
    """Identifies a turn to a surface. `route` comes from the newest message of the turn."""

    id: str
    conversation: str
    channel: str
    platform: Platform
    route: Mapping[str, str | int | float | bool | None]
    users: tuple[str, ...] = ()


# ---- progress events: what a surface may render while a turn runs (best effort, never required) ----


@dataclass(frozen=True, slots=True)
class Started:
    kind: Literal["started"] = "started"


@dataclass(frozen=True, slots=True)
class Delegated:
    sub: str
    task: str
    call_id: str
    kind: Literal["delegated"] = "delegated"


@dataclass(frozen=True, slots=True)
class SubFinished:
    sub: str
    call_id: str
    ok: bool
    kind: Literal["sub_finished"] = "sub_finished"


@dataclass(frozen=True, slots=True)
class HandedOff:
    """The conversation went from one assistant to another (handoffs); the new one answers from here on."""

    from_agent: str
    to_agent: str
    reason: str = ""
    kind: Literal["handed_off"] = "handed_off"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    kind: Literal["text_delta"] = "text_delta"


#: plain words for `Retrying.reason` codes (which are for logs and metrics), for progress lines a user reads
RETRY_WORDS = {
    "unreachable": "cannot connect to the AI provider",
    "connection": "the connection to the AI provider failed",
    "timeout": "the AI provider did not answer in time",
    "rate_limit": "the AI provider is rate-limiting us",
    "rate_limit_exceeded": "the AI provider is rate-limiting us",
    "server_error": "the AI provider had an error",
    "conflict": "the AI provider reported a conflict",
    "thread_gone": "the conversation was lost at the AI provider; rebuilding it",
    "run_gone": "the work was lost at the AI provider; starting it again",
    "run_lost": "the work was lost at the AI provider; starting it again",
    "stuck_tool_call": "the conversation was stuck on an unanswered step; repairing it",
    "outputs_rejected": "the AI provider refused a teammate's result; starting again",
    "cancelled_by_provider": "the AI provider cancelled the work",
    "expired": "the work expired at the AI provider",
    "queued_too_long": "the AI provider did not start the work",
    "thread_locked": "the conversation is busy with another request",
    "thread_locked_by_unknown_run": "the conversation is busy with another request",
    "stream_dropped": "the connection dropped",
    "stream_dropped_before_created": "the connection dropped",
}
RETRY_WORDS_GENERIC = "a hiccup at the AI provider"


@dataclass(frozen=True, slots=True)
class Retrying:
    reason: str
    attempt: int
    who: str = "proxy"
    kind: Literal["retrying"] = "retrying"

    @property
    def words(self) -> str:
        """What happened, in words a user understands; never the internal code."""
        return RETRY_WORDS.get(self.reason, RETRY_WORDS_GENERIC)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # of `input_tokens`, those the provider served from its prompt cache

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cached_input_tokens + other.cached_input_tokens)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Done:
    text: str
    usage: Usage = field(default_factory=Usage)
    incomplete: bool = False
    kind: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class Failed:
    user_message: str
    kind: Literal["failed"] = "failed"


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """The turn shown as started when its message was accepted will not run: the message was deleted before the
    turn began (`switchboard forget`). The surface drops the turn's indicator; no reply follows."""

    kind: Literal["withdrawn"] = "withdrawn"


Progress = Started | Delegated | SubFinished | HandedOff | TextDelta | Retrying | Done | Failed | Withdrawn


@dataclass(frozen=True, slots=True)
class Reply:
    """The one final message of a turn. `kind` tells the surface how to present it."""

    text: str
    kind: Literal["answer", "failure", "notice"] = "answer"


class Surface(Protocol):
    """Implemented by each adapter; registered with `Bot.add_surface`.

    `progress` is best effort: exceptions are logged and ignored. `deliver` must post `reply` so that it can be
    found again by `find_delivery` (Slack message metadata / Discord nonce carrying `turn.id`); the engine calls
    `find_delivery` before re-posting after a crash, which is what makes delivery exactly-once. A `find_delivery`
    that raises (the platform cannot be asked) is retried with backoff a few times; if it keeps failing the engine
    posts the reply anyway and logs that it may be a duplicate.

    `deliver` owns retries and fallbacks (the adapter knows the platform's errors): it retries transient failures
    with backoff and, where the reply cannot go where it belongs, delivers it the best other way (without the reply
    link, as a new message, to the user directly). Only when no way works does it raise `Undeliverable`; the engine
    then records the turn as undeliverable instead of leaving it `delivering`. Any other exception is a bug: the
    engine logs it and records the turn the same way.
    """

    platform: Platform

    async def progress(self, turn: TurnRef, event: Progress) -> None: ...

    async def deliver(self, turn: TurnRef, reply: Reply) -> str: ...

    async def find_delivery(self, turn: TurnRef) -> str | None: ...


#: `delivered_ref` the engine records for a turn whose reply could not be delivered: ``undeliverable:<reason>``
UNDELIVERABLE_PREFIX = "undeliverable:"


class Undeliverable(SwitchboardError):
    """Raised by `Surface.deliver` when the reply cannot reach the user by any way the platform offers, after the
    surface's own retries and fallbacks. `reason` is short and machine-readable (a platform error name such as
    ``not_in_channel`` or ``50013``); it ends up in the turn's record as ``undeliverable:<reason>``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---- commands: every platform's slash commands end up in `Bot.command`, parsed and authorised once ----


@dataclass(frozen=True, slots=True)
class Actor:
    """Who issued a command. `platform_admin` is the platform's own notion: Slack workspace admin/owner,
    Discord member with Manage Server (checked by the adapter with a real permission check)."""

    platform: Platform
    user: str
    platform_admin: bool = False


@dataclass(frozen=True, slots=True)
class CommandContext:
    actor: Actor
    channel: str
    conversation: str | None = None  # the conversation the command was issued in, when there is one


@dataclass(frozen=True, slots=True)
class CommandResult:
    ok: bool
    text: str


class BotLike(Protocol):
    """What adapters may call on the engine (implemented by `bot.engine.Bot`).

    `command(ctx, "reset")`, `command(ctx, "status")`, `command(ctx, "help")`, `command(ctx, "assistants")` and the
    admin subcommands (`reset channel`, `reset all`, `cancel`, `audit`) take the text after the slash command.
    """

    def add_surface(self, surface: Surface) -> None: ...

    async def accept(self, inbound: Inbound) -> Accepted: ...

    async def command(self, ctx: CommandContext, text: str) -> CommandResult: ...

    async def has_conversation(self, conversation: str) -> bool:
        """True when the engine has started the conversation with this key (also before a restart): a platform
        thread it is part of. May raise when the engine cannot tell (its database failed)."""
        ...
