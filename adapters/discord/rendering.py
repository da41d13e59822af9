"""What the user sees: the progress embed, the final reply's text, and the marks that let us recognise our own
messages after a restart (a footer on every progress embed; nonces derived from the turn id)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import discord

from adapters.discord.constants import (
    EMBED_DESCRIPTION_LIMIT,
    EMBED_TITLE_LIMIT,
    FLAG_LOADING,
    NONCE_MAX_LENGTH,
)
from bot.types import Delegated, HandedOff, Progress, Reply, Retrying, Started, SubFinished, TextDelta

#: footer of every embed that is NOT a final answer; how `find_delivery` tells "still working" from "delivered"
PROGRESS_FOOTER = "Switchboard · working"
TASK_PREVIEW_CHARS = 120
PROGRESS_COLOUR = discord.Colour.blurple()

_SUB_ICONS = {"working": "⏳", "done": "✅", "failed": "⚠️"}
_REPLY_PREFIX = {"answer": "", "failure": "⚠️ ", "notice": "ℹ️ "}


def nonce_for(turn_id: str, part: str | int) -> str:
    """A message nonce for one message of one turn: numeric (safest form), stable across restarts, <= 25 chars."""
    digest = hashlib.sha256(f"switchboard/{turn_id}/{part}".encode()).hexdigest()
    nonce = str(int(digest[:15], 16))  # 60 bits -> at most 19 digits
    assert len(nonce) <= NONCE_MAX_LENGTH
    return nonce


def format_reply(reply: Reply) -> str:
    text = reply.text if reply.text.strip() else "(The answer was empty.)"
    return _REPLY_PREFIX.get(reply.kind, "") + text


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class _SubLine:
    sub: str
    task: str
    state: Literal["working", "done", "failed"] = "working"


@dataclass(slots=True)
class ProgressState:
    """Accumulates progress events into what the progress message shows.

    `TextDelta` is a live preview; after `Retrying` the preview restarts, because the retried attempt streams
    its text again from the beginning.
    """

    started: bool = False
    subs: dict[str, _SubLine] = field(default_factory=dict)
    preview: str = ""
    retry: Retrying | None = None
    handed: list[str] = field(default_factory=list)  # "handed to editor" lines, in order

    def apply(self, event: Progress) -> bool:
        """Update from one event; True if there is now something worth showing in a progress message."""
        if isinstance(event, Started):
            self.started = True
            return False
        if isinstance(event, Delegated):
            self.subs[event.call_id] = _SubLine(event.sub, event.task)
        elif isinstance(event, SubFinished):
            line = self.subs.setdefault(event.call_id, _SubLine(event.sub, ""))
            line.state = "done" if event.ok else "failed"
        elif isinstance(event, HandedOff):
            self.handed.append(f"➡️ handed to **{event.to_agent}**" + (
                f": {_clip(event.reason, TASK_PREVIEW_CHARS)}" if event.reason else ""))
        elif isinstance(event, TextDelta):
            self.preview += event.text
        elif isinstance(event, Retrying):
            self.retry = event
            self.preview = ""
        else:  # Done / Failed: the reply itself follows through `deliver`
            return False
        return True

    def lines(self) -> list[str]:
        out = list(self.handed)
        for line in self.subs.values():
            icon = _SUB_ICONS[line.state]
            if line.state == "working":
                task = _clip(line.task, TASK_PREVIEW_CHARS)
                out.append(f"{icon} **{line.sub}** is working" + (f": {task}" if task else ""))
            elif line.state == "done":
                out.append(f"{icon} **{line.sub}** finished")
            else:
                out.append(f"{icon} **{line.sub}** ran into a problem")
        if self.retry is not None:
            who = "" if self.retry.who == "proxy" else f" ({self.retry.who})"
            why = _clip(self.retry.words, TASK_PREVIEW_CHARS)
            out.append(f"🔁 Retrying{who}: {why} (attempt {self.retry.attempt})")
        return out

    def embed(self) -> discord.Embed:
        working = sum(1 for line in self.subs.values() if line.state == "working")
        title = (
            f"Working on it… ({working} assistant{'s' if working != 1 else ''} busy)" if working else "Working on it…"
        )
        head = "\n".join(self.lines())
        description = head
        if self.preview:
            room = EMBED_DESCRIPTION_LIMIT - len(head) - 4
            preview = self.preview if len(self.preview) <= room else "…" + self.preview[-(room - 1) :]
            description = (head + "\n\n" if head else "") + preview
        return status_embed(title, description[:EMBED_DESCRIPTION_LIMIT])


def status_embed(title: str, description: str = "") -> discord.Embed:
    embed = discord.Embed(title=title[:EMBED_TITLE_LIMIT], description=description or None, colour=PROGRESS_COLOUR)
    embed.set_footer(text=PROGRESS_FOOTER)
    return embed


def handover_embed() -> discord.Embed:
    return status_embed("Still working…", "This is taking a while: the answer will be posted in this channel.")


def placeholder_embed() -> discord.Embed:
    return status_embed("Posting the answer…")


def is_status_message(message: discord.Message) -> bool:
    return any(embed.footer.text == PROGRESS_FOOTER for embed in message.embeds)


def is_final(message: discord.Message) -> bool:
    """A message of ours that carries (the first part of) an answer rather than progress or "thinking"."""
    loading = bool(message.flags.value & FLAG_LOADING)
    return bool(message.content) and not loading and not is_status_message(message)
