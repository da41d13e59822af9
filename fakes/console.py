"""A console surface that keeps what it printed instead of printing it, one `Posted` per reply.
`find_delivery` looks there, so a turn resumed after a crash is not printed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.types import Progress, Reply, TurnRef


@dataclass
class Posted:
    turn_id: str
    conversation: str
    kind: str
    text: str


class ConsolePlatform:
    """What a terminal would show, kept: one entry per printed reply."""

    platform = "console"

    def __init__(self) -> None:
        self.posted: list[Posted] = []

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        return None

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        self.posted.append(Posted(turn.id, turn.conversation, reply.kind, reply.text))
        return f"console:{len(self.posted)}"

    async def find_delivery(self, turn: TurnRef) -> str | None:
        for i, posted in enumerate(self.posted):
            if posted.turn_id == turn.id:
                return f"console:{i + 1}"
        return None
