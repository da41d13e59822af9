"""Conversation keys and the `route` an `Inbound` carries (stored by the engine, so JSON-serialisable)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import discord

RouteKind = Literal["message", "interaction"]


def scope(guild_id: int | None) -> str:
    return "dm" if guild_id is None else str(guild_id)


def conversation_key(guild_id: int | None, channel_or_thread_id: int) -> str:
    """`discord:<guild or dm>:<channel or thread id>`: one conversation per channel, thread or DM."""
    return f"discord:{scope(guild_id)}:{channel_or_thread_id}"


def channel_key(guild_id: int | None, channel_id: int) -> str:
    """`discord:<guild or dm>:<channel id>`: a thread's channel is its parent (so "reset channel" covers threads)."""
    return f"discord:{scope(guild_id)}:{channel_id}"


def keys_for(channel: object, guild_id: int | None) -> tuple[str, str]:
    """(conversation, channel) keys for a message or command in `channel`."""
    channel_id = int(getattr(channel, "id", 0))
    if isinstance(channel, discord.Thread):
        return conversation_key(guild_id, channel_id), channel_key(guild_id, channel.parent_id)
    return conversation_key(guild_id, channel_id), channel_key(guild_id, channel_id)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a turn is answered.

    kind "message": post into `channel_id`, replying to `anchor_id` (the user's message, or our own echo of an
    `/ask` prompt at the top of a thread). kind "interaction": the answer replaces the deferred response
    `anchor_id` of interaction `interaction_id` while its token lives, else goes to `channel_id` replying to it.
    Ids are strings in the stored form so that no JSON consumer rounds them.
    """

    kind: RouteKind
    channel_id: int
    anchor_id: int
    guild_id: int | None = None
    interaction_id: int | None = None

    def to_mapping(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "channel_id": str(self.channel_id),
            "anchor_id": str(self.anchor_id),
            "guild_id": None if self.guild_id is None else str(self.guild_id),
            "interaction_id": None if self.interaction_id is None else str(self.interaction_id),
        }

    @classmethod
    def parse(cls, raw: Mapping[str, str | int | float | bool | None]) -> Route:
        def opt(name: str) -> int | None:
            value = raw.get(name)
            return None if value in (None, "") else int(value)  # type: ignore[arg-type]

        kind = raw.get("kind")
        if kind not in ("message", "interaction"):
            raise ValueError(f"not a Discord route: {dict(raw)!r}")
        channel_id, anchor_id = opt("channel_id"), opt("anchor_id")
        if channel_id is None or anchor_id is None:
            raise ValueError(f"Discord route without channel or anchor: {dict(raw)!r}")
        return cls(kind, channel_id, anchor_id, opt("guild_id"), opt("interaction_id"))  # type: ignore[arg-type]
