"""What a sub-assistant sees of its caller's conversation: `brief` (only the task and the caller's context, on the
sub-assistant's own thread kept across turns), `fork` (a fresh thread per call, seeded with a copy of the caller's
conversation so far) or `recent:N` (the same, with only the current turn and the N turns before it).

`parse_context` validates the team file's value; `fork_seed` picks the messages to copy. A forked thread gets its
own thread path per call (`<sub>#<call id>`), so a resumed or rebuilt call finds or re-forks exactly its own thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.errors import SwitchboardError

MAX_RECENT_TURNS = 1000  # beyond this `recent:N` is a `fork` in all but name: surely a typo
FORK_MARK = "#"  # joins a sub-assistant's name and the call id in the thread path of a forked thread
CONTEXT_VALUES = 'one of "brief", "fork" or "recent:N" (N: a whole number of turns, 1 to 1000)'
_RECENT = re.compile(r"^recent:([0-9]{1,4})$")

Role = Literal["user", "assistant"]


class ContextValueError(SwitchboardError, ValueError):
    """A `context` value in the team file is not one of the modes."""


@dataclass(frozen=True, slots=True)
class ContextMode:
    kind: Literal["brief", "fork", "recent"] = "brief"
    turns: int | None = None  # `recent`: how many turns before the current one are copied

    @property
    def copies(self) -> bool:
        return self.kind != "brief"

    def __str__(self) -> str:
        return f"recent:{self.turns}" if self.kind == "recent" else self.kind


BRIEF = ContextMode()


def parse_context(value: object) -> ContextMode:
    """The mode a team file's `context` value names; `ContextValueError` (its text says what is allowed) else."""
    if value == "brief":
        return BRIEF
    if value == "fork":
        return ContextMode("fork")
    match = _RECENT.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= MAX_RECENT_TURNS:
        raise ContextValueError(f"must be {CONTEXT_VALUES}, not {value!r}")
    return ContextMode("recent", int(match.group(1)))


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    text: str


def fork_seed(messages: Sequence[Message], mode: ContextMode) -> list[Message]:
    """The messages a forked thread starts with: all of them (`fork`), or the current turn and the `turns` turns
    before it (`recent`). A turn starts at a user message that follows an assistant message (or at the first)."""
    kept = [m for m in messages if m.text.strip()]
    if mode.kind != "recent" or mode.turns is None:
        return kept if mode.copies else []
    starts = [i for i, m in enumerate(kept) if m.role == "user" and (i == 0 or kept[i - 1].role == "assistant")]
    wanted = mode.turns + 1  # the current turn is the last one begun
    return kept[starts[-wanted]:] if len(starts) > wanted else kept


def fork_path(sub_thread: str, call_id: str) -> str:
    """The thread path of the thread forked for one call (`researcher#call_1`, `planner/researcher#call_2`)."""
    return f"{sub_thread}{FORK_MARK}{call_id}"


def is_fork_path(thread_path: str) -> bool:
    return FORK_MARK in thread_path.rsplit("/", 1)[-1]


def agent_of_path(thread_path: str) -> str:
    """The assistant a thread path belongs to: its last segment, without a fork's call id."""
    return thread_path.rsplit("/", 1)[-1].split(FORK_MARK, 1)[0]


def fork_note(caller: str) -> str:
    """Told with the task on a forked thread: the copied assistant messages are the caller's, not its own (the
    known trap of shared threads is an assistant taking every earlier assistant message as its own)."""
    return (f"(The messages before this one are a copy of the {caller} assistant's conversation with the user, "
            f"for context; the assistant messages in it were written by the {caller} assistant, not by you.)")
