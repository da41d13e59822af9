"""Text the adapter shows: task chunks, the fallback placeholder, failure notes, reply metadata."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adapters.slack import constants as c
from bot.types import Reply

PLACEHOLDER_WORKING = "Working on it..."
FAILURE_PREFIX = ":warning: "
WORD_JOINER = "\u2060"  # invisible: "@⁠here" reads as @here but is no mention
#: Slack's broadcast and user-group mentions in API text (Slack "Formatting text for app surfaces": special
#: mentions `<!here>`, `<!channel>`, `<!everyone>`, user groups `<!subteam^ID>` / `<!subteam^ID|@label>`), and the
#: plain words, which Slack links when a message is sent with `link_names` or `parse=full`
_SPECIAL_MENTION = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>", re.IGNORECASE)
_GROUP_MENTION = re.compile(r"<!subteam\^[^>|]*(?:\|@?([^>]*))?>", re.IGNORECASE)
_PLAIN_MENTION = re.compile(r"(?<![\w@])@(here|channel|everyone)\b", re.IGNORECASE)
#: the end of a text that could still become a mention with the next streamed words
_UNFINISHED_TAIL = re.compile(r"(?:<(?:![^>]{0,120})?|@\w{0,10})?\Z")
_ICONS = {c.TASK_IN_PROGRESS: ":hourglass_flowing_sand:", c.TASK_COMPLETE: ":white_check_mark:", c.TASK_ERROR: ":x:"}


@dataclass
class Task:
    call_id: str
    sub: str
    task: str
    status: str = c.TASK_IN_PROGRESS


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if c.MESSAGE_TEXT.length(text) <= limit:
        return text
    return text[: c.MESSAGE_TEXT.fitting_prefix(text, limit - 3)] + "..."


def defuse_mentions(text: str) -> str:
    """Model text made safe to post: broadcast and user-group mentions become plain, unlinked words."""
    text = _SPECIAL_MENTION.sub(lambda m: f"@{WORD_JOINER}{m.group(1)}", text)
    text = _GROUP_MENTION.sub(lambda m: f"@{WORD_JOINER}{m.group(1) or 'group'}", text)
    return _PLAIN_MENTION.sub(lambda m: f"@{WORD_JOINER}{m.group(1)}", text)


def defused_preview(raw: str) -> str:
    """The streamed text so far, defused, without a tail that the next words could turn into a mention (so what
    is shown stays a prefix of the defused reply)."""
    text = defuse_mentions(raw)
    tail = _UNFINISHED_TAIL.search(text)  # matches, at worst the empty end
    return text[: tail.start()] if tail else text


def task_chunk(task: Task) -> dict[str, Any]:
    """A chat-streaming task_update chunk for one sub-assistant call."""
    chunk: dict[str, Any] = {"type": "task_update", "id": task.call_id, "title": task.sub, "status": task.status}
    if task.task:
        chunk["details"] = shorten(defuse_mentions(task.task), c.TASK_DETAILS_MAX_CHARS)
    return chunk


def markdown_chunk(text: str) -> dict[str, Any]:
    return {"type": "markdown_text", "text": text}


def reply_body(reply: Reply) -> str:
    """The text posted for a reply: answers and notices verbatim, failures marked as such."""
    text = defuse_mentions(reply.text) if reply.text.strip() else "(no answer)"
    if reply.kind == "failure":
        return FAILURE_PREFIX + text
    return text


def reply_metadata(turn_id: str, part: int, last: bool, end: int) -> dict[str, Any]:
    """Message metadata that lets `find_delivery` recognise part `part` (1-based) of a turn's reply;
    `end` is the offset in the reply body where this part ends (to resume a partly posted reply)."""
    return {
        "event_type": c.REPLY_METADATA_EVENT_TYPE,
        "event_payload": {"turn_id": turn_id, "part": part, "last": last, "end": end},
    }


def preview_metadata(turn_id: str) -> dict[str, Any]:
    """Message metadata of a turn's live placeholder (not a reply: `find_delivery` removes it as a leftover)."""
    return {"event_type": c.PREVIEW_METADATA_EVENT_TYPE, "event_payload": {"turn_id": turn_id}}


def placeholder_text(tasks: list[Task], preview: str, limit: int = c.MESSAGE_PART_MAX_CHARS) -> str:
    """The fallback placeholder: one line per sub-assistant, then the tail of the live preview; <= limit."""
    lines = []
    for t in tasks:
        detail = f": {shorten(defuse_mentions(t.task), c.TASK_DETAILS_MAX_CHARS)}" if t.task else ""
        lines.append(f"{_ICONS.get(t.status, '')} **{t.sub}**{detail}".strip())
    head = "\n".join(lines)
    if c.MESSAGE_TEXT.length(head) > limit // 2:
        head = head[: c.MESSAGE_TEXT.fitting_prefix(head, limit // 2 - 3)] + "..."
    if not preview.strip():
        return head or PLACEHOLDER_WORKING
    room = limit - c.MESSAGE_TEXT.length(head) - 2
    tail = preview
    if c.MESSAGE_TEXT.length(tail) > room:
        keep = tail[::-1]
        keep = keep[: c.MESSAGE_TEXT.fitting_prefix(keep, room - 1)][::-1]
        tail = "…" + keep
    return f"{head}\n\n{tail}" if head else tail
