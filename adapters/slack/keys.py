"""Conversation keys, routes, and the set of threads the bot takes part in.

Keys:
- channel (also private channel, group DM) thread: ``slack:<team>:<channel>:<thread_ts>``. A mention starts a
  conversation on the mentioned message's thread (thread_ts = the message's ts when it is not in a thread yet).
- DM thread (including the assistant view, whose conversations are always DM threads): the same form.
- DM top level: ``slack:<team>:<dm channel>:dm``: one running conversation per DM.
- channel key (for channel-wide admin actions): ``slack:<team>:<channel>``.

Threads the bot is in: `ThreadRegistry` remembers every conversation key the adapter handed to the engine; a
thread reply without a mention is answered only when its key is known. The memory is per process: after a restart
the engine can `seed()` it with the keys it has stored, or pass a `lookup` coroutine that answers from its
database. Until then, a mention brings the bot back into a thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from adapters.slack.constants import DM_SUFFIX, PLATFORM

Place = Literal["channel", "dm"]
RouteValue = str | int | float | bool | None


def channel_key(team: str, channel: str) -> str:
    return f"{PLATFORM}:{team}:{channel}"


def conversation_key(team: str, channel: str, thread_ts: str | None) -> str:
    return f"{channel_key(team, channel)}:{thread_ts or DM_SUFFIX}"


def is_dm_channel(channel: str, channel_type: str | None = None) -> bool:
    if channel_type:
        return channel_type == "im"
    return channel.startswith("D")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a turn is shown. Stored by the engine as a plain mapping (see `as_mapping`)."""

    team: str
    channel: str
    user: str
    message_ts: str
    #: thread the reply goes into; None: top level of a DM
    thread_ts: str | None
    place: Place

    @property
    def status_thread_ts(self) -> str:
        """Thread the thinking indicator is attached to (the user's message itself on a DM's top level)."""
        return self.thread_ts or self.message_ts

    @property
    def is_dm(self) -> bool:
        return self.place == "dm"

    def as_mapping(self) -> dict[str, RouteValue]:
        return {
            "team": self.team,
            "channel": self.channel,
            "user": self.user,
            "message_ts": self.message_ts,
            "thread_ts": self.thread_ts,
            "place": self.place,
        }

    @classmethod
    def from_mapping(cls, route: Mapping[str, RouteValue]) -> Route:
        thread_ts = route.get("thread_ts")
        place = route.get("place")
        channel = str(route.get("channel") or "")
        return cls(
            team=str(route.get("team") or ""),
            channel=channel,
            user=str(route.get("user") or ""),
            message_ts=str(route.get("message_ts") or thread_ts or ""),
            thread_ts=str(thread_ts) if thread_ts else None,
            place="dm" if place == "dm" or (place is None and is_dm_channel(channel)) else "channel",
        )


Lookup = Callable[[str], Awaitable[bool]]


class ThreadRegistry:
    """Conversation keys of the threads the bot is part of (in memory, seedable, optionally backed by a lookup)."""

    def __init__(self, keys: Iterable[str] = (), lookup: Lookup | None = None) -> None:
        self._keys: set[str] = set(keys)
        self.lookup = lookup

    def add(self, key: str) -> None:
        self._keys.add(key)

    def seed(self, keys: Iterable[str]) -> None:
        self._keys.update(keys)

    def discard(self, key: str) -> None:
        self._keys.discard(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    async def knows(self, key: str) -> bool:
        if key in self._keys:
            return True
        if self.lookup is not None and await self.lookup(key):
            self._keys.add(key)
            return True
        return False
