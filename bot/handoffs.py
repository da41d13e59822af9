"""Handoffs on one shared thread: the conversation's active assistant answers on the main thread, and may hand the
conversation to another with a `transfer_to_<name>(reason, notes, state)` call; the switch and the state are
recorded in the store once per call (a resumed turn finds it done), and the next run on the main thread uses the new
assistant's instructions, model and tools plus a briefing: the notes, the state and who wrote each earlier reply.

The orchestrator calls `Handoffs` only when the team file uses handoffs (`TeamConfig.uses_handoffs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.backends.base import ToolCall
from bot.config import AgentConfig, TeamConfig
from storage.base import Store, TranscriptEntry
from storage.handoffs import HandoffState, Transfer

TRANSFER_PREFIX = "transfer_to_"
MAX_STATE_KEYS = 50
MAX_STATE_VALUE_CHARS = 2000
MAX_NOTES_CHARS = 8000
ATTRIBUTED_REPLIES = 20  # the newest replies listed in the briefing with their author
EXCERPT_CHARS = 120

def signed(agent: str, text: str) -> str:
    """A reply with the name of the assistant that wrote it, so users see who answers (once: a reply that already
    opens with the name is left as it is)."""
    if not text.strip() or text.startswith(f"{agent}: "):
        return text
    return f"{agent}: {text}"

REASON_DESCRIPTION = "Why the conversation goes to this assistant, in one sentence."
NOTES_DESCRIPTION = (
    "What the next assistant needs to know to carry on without asking the user again: what the user wants, what "
    "was decided, open questions."
)
STATE_DESCRIPTION = (
    "Facts to keep in the conversation's state, as string values (e.g. {\"page_id\": \"42\"}); null removes a key. "
    "Every later assistant sees the state."
)


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    output: str
    ok: bool
    applied: bool = False  # this call switched the active assistant now (not on an earlier attempt)
    bad: bool = False  # a call naming no allowed assistant, or with invalid arguments
    to_agent: str = ""
    reason: str = ""


def transfer_tool(target: AgentConfig) -> dict[str, object]:
    return {
        "type": "function",
        "name": TRANSFER_PREFIX + target.name,
        "description": (f"Hand this conversation to the {target.name} assistant, who then answers the user on this "
                        f"same thread. {target.description}").strip(),
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": REASON_DESCRIPTION},
                "notes": {"type": "string", "description": NOTES_DESCRIPTION},
                "state": {"type": "object", "description": STATE_DESCRIPTION,
                          "additionalProperties": {"type": ["string", "null"]}},
            },
            "required": ["reason", "notes", "state"],
        },
        "strict": False,  # `state` has free keys, which strict mode cannot express
    }


def is_transfer(name: str) -> bool:
    return name.startswith(TRANSFER_PREFIX)


def parse_state(value: Any) -> dict[str, str | None]:
    """The `state` argument: an object of short strings (numbers and booleans are written as text)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("state must be an object")
    if len(value) > MAX_STATE_KEYS:
        raise ValueError(f"state may hold at most {MAX_STATE_KEYS} keys")
    parsed: dict[str, str | None] = {}
    for key, item in value.items():
        if item is None:
            parsed[str(key)] = None
        elif isinstance(item, str | int | float | bool):
            text = json.dumps(item) if isinstance(item, bool) else str(item)
            parsed[str(key)] = text[:MAX_STATE_VALUE_CHARS]
        else:
            raise ValueError(f"state[{key!r}] must be a string")
    return parsed


def state_line(state: dict[str, str] | Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dict(state).items())) or "(empty)"


def briefing(agent: AgentConfig, held: HandoffState, entries: list[TranscriptEntry], authors: dict[str, str],
             entry: str) -> str:
    """What the active assistant is told besides its own instructions: whose replies the earlier assistant
    messages are, why it has the conversation, and the state."""
    lines = [f"You are the {agent.name} assistant. Several assistants take turns on this conversation."]
    if held.from_agent and held.active == agent.name:
        lines.append(f"The {held.from_agent} assistant handed the conversation to you. Reason: "
                     f"{held.reason or '(none given)'}")
        if held.notes:
            lines.append(f"Notes from {held.from_agent}: {held.notes}")
    lines.append(f"Conversation state: {state_line(held.state)}")
    replies = [e for e in entries if e.role == "assistant"][-ATTRIBUTED_REPLIES:]
    if replies:
        lines.append("Earlier assistant messages in this conversation, and who wrote each (only those by "
                     f"{agent.name} are yours):")
        for e in replies:
            who = authors.get(e.turn_id or "", entry)
            excerpt = " ".join(e.text.split())[:EXCERPT_CHARS]
            lines.append(f"- {who}: \"{excerpt}\"")
    return "\n".join(lines)


class Handoffs:
    """The team's handoff rules over the store; shared by every turn."""

    def __init__(self, team: TeamConfig, store: Store) -> None:
        self.team = team
        self.store = store

    async def active(self, conversation: str, generation: int) -> AgentConfig:
        held = await self.store.handoff_state(conversation, generation)
        return (self.team.member(held.active) if held.active else None) or self.team.entry_agent

    def tools(self, agent: AgentConfig) -> list[dict[str, object]]:
        return [transfer_tool(t) for t in (self.team.member(n) for n in agent.handoffs) if t is not None]

    async def briefing(self, conversation: str, generation: int, agent: AgentConfig,
                       entries: list[TranscriptEntry]) -> str:
        held = await self.store.handoff_state(conversation, generation)
        authors = await self.store.turn_agents(conversation, generation)
        return briefing(agent, held, entries, authors, self.team.entry_agent.name)

    async def transfer(self, conversation: str, generation: int, turn_id: str, caller: AgentConfig,
                       call: ToolCall) -> TransferOutcome:
        name = call.name[len(TRANSFER_PREFIX):]
        target = self.team.member(name)
        if target is None or name not in caller.handoffs:
            return TransferOutcome(f"ERROR: {caller.name} cannot hand the conversation to {name!r}. Answer yourself.",
                                   False, bad=True)
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
            state = parse_state(args.get("state"))
            reason = str(args.get("reason") or "")[:MAX_STATE_VALUE_CHARS]
            notes = str(args.get("notes") or "")[:MAX_NOTES_CHARS]
        except ValueError as exc:
            return TransferOutcome(f"ERROR: the arguments for {call.name} were not valid ({exc}).", False, bad=True)
        transfer = Transfer(conversation, generation, caller.name, target.name, reason, notes,
                            state, turn_id, call.call_id)
        applied = await self.store.apply_transfer(transfer, self.team.limits.max_handoffs_per_turn)
        if applied == "over_limit":
            limit = self.team.limits.max_handoffs_per_turn
            return TransferOutcome(f"ERROR: this turn already handed the conversation on {limit} times, the limit. "
                                   "Answer the user yourself.", False)
        return TransferOutcome(
            f"Transferred to {target.name}. The {target.name} assistant answers the user from here on.",
            True, applied=applied == "applied", to_agent=target.name, reason=reason,
        )

    async def record_answer(self, turn_id: str, conversation: str, generation: int, agent: AgentConfig) -> None:
        await self.store.record_turn_agent(turn_id, conversation, generation, agent.name)


# ---- what admins see and do ----


async def handoff_status(team: TeamConfig, store: Store, conversation: str) -> str:
    """The active assistant and state of a conversation, for `status`."""
    record = await store.get_conversation(conversation)
    generation = record.generation if record else 0
    held = await store.handoff_state(conversation, generation)
    active = held.active or team.entry_agent.name
    return f"active assistant: {active}; state: {state_line(held.state)}"


async def set_active(team: TeamConfig, store: Store, conversation: str, name: str, who: str) -> str:
    """Make `name` the conversation's active assistant (an admin's transfer; the state is kept). Raises
    ValueError for a name not on the team or a conversation that never started."""
    if team.member(name) is None:
        raise ValueError(f"{name!r} is not an assistant on this team.")
    record = await store.get_conversation(conversation)
    if record is None:
        raise ValueError("This conversation has not started yet.")
    held = await store.handoff_state(conversation, record.generation)
    current = held.active or team.entry_agent.name
    transfer = Transfer(conversation, record.generation, current, name, reason=f"set by {who}", source="admin")
    await store.apply_transfer(transfer, team.limits.max_handoffs_per_turn)
    return f"{name} now answers in this conversation (was {current})."
