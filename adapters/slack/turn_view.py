"""One turn on screen: the thinking indicator, the chat stream (or paced placeholder), and the final reply.

- the indicator is shown before anything is posted (see status.py) and cleared when the turn ends;
- progress goes into one chat stream (a task_update chunk per sub-assistant call, the live text preview as
  markdown); where Slack refuses to stream (or the reply has no thread: a DM's top level) it goes into one
  placeholder message updated at most once per `update_interval` instead;
- after the proxy's `Retrying`, a stream that already shows preview text is removed (a stream cannot take text
  back) and a new one starts; a placeholder simply drops its preview;
- `deliver` finishes the stream with the rest of the reply when the preview is a prefix of it, else removes the
  preview and posts the reply; a placeholder becomes the reply's first part. Long replies continue in further
  messages, split below Slack's limits and never cut. Every part carries message metadata with the turn id, part
  number and end offset, so `find_delivery` finds a delivered reply (and resumes a partly posted one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from slack_sdk.errors import SlackApiError

from adapters.slack import constants as c
from adapters.slack.keys import Route
from adapters.slack.render import (
    Task,
    markdown_chunk,
    placeholder_text,
    reply_body,
    reply_metadata,
    task_chunk,
)
from adapters.slack.splitting import slack_len, split_text
from bot.types import (
    Delegated,
    Done,
    Failed,
    Progress,
    Reply,
    Retrying,
    Started,
    SubFinished,
    TextDelta,
    TurnRef,
)

if TYPE_CHECKING:
    from adapters.slack.surface import SlackSurface

log = logging.getLogger(__name__)

Mode = Literal["none", "stream", "fallback"]


def _err(e: Exception) -> str:
    if isinstance(e, SlackApiError):
        return str(e.response.get("error"))
    return type(e).__name__


@dataclass(frozen=True)
class Resume:
    """A reply partly posted before a crash: continue after `end` with part number `next_part`."""

    first_ts: str
    end: int
    next_part: int


class TurnView:
    def __init__(self, surface: SlackSurface, turn: TurnRef) -> None:
        self.s = surface
        self.turn = turn
        self.route = Route.from_mapping(turn.route)
        self.recipient_user = self.route.user or (turn.users[-1] if turn.users else "")
        self.tasks: dict[str, Task] = {}
        self.preview = ""
        self.mode: Mode = "none"
        self.stream_ts: str | None = None
        self.streamed = ""  # answer text already in the stream message
        self.shown_status: dict[str, str] = {}  # task statuses the stream message shows
        self.restart_stream = False
        self.placeholder_ts: str | None = None
        self.placeholder_shown = ""
        self.last_write = float("-inf")
        self.lock = asyncio.Lock()
        self.flush_task: asyncio.Task[None] | None = None
        self.flushing = False
        self.dirty = False
        self.closed = False

    # ---- progress -----------------------------------------------------------------------------------------------

    @property
    def status_key(self) -> tuple[str, str]:
        return self.route.channel, self.route.status_thread_ts

    async def on_progress(self, event: Progress) -> None:
        if self.closed:
            return
        channel, thread = self.status_key
        if isinstance(event, Started):
            await self.s.status.ensure(channel, thread)
            return
        if isinstance(event, Delegated):
            self.tasks[event.call_id] = Task(event.call_id, event.sub, event.task)
            await self.s.status.sub_started(channel, thread, event.call_id, event.sub)
        elif isinstance(event, SubFinished):
            task = self.tasks.setdefault(event.call_id, Task(event.call_id, event.sub, ""))
            task.status = c.TASK_COMPLETE if event.ok else c.TASK_ERROR
            await self.s.status.sub_finished(channel, thread, event.call_id)
        elif isinstance(event, TextDelta):
            self.preview += event.text
        elif isinstance(event, Retrying):
            # only the proxy streams text: a sub-assistant's retry leaves the preview as it is
            if event.who not in {t.sub for t in self.tasks.values()}:
                self.preview = ""
                if self.streamed:
                    self.restart_stream = True
            await self.s.status.retrying(channel, thread)
        elif isinstance(event, Failed):
            await self.s.status.clear(channel, thread)
            return
        elif isinstance(event, Done):
            return
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        self.dirty = True
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.create_task(self._flush_later(), name=f"slack-flush-{self.turn.id}")

    async def _flush_later(self) -> None:
        """Show the latest state, at most once per update interval, until nothing changed since the last write."""
        while self.dirty and not self.closed:
            await self._pace()
            async with self.lock:
                if self.closed:
                    return
                self.dirty = False
                self.flushing = True
                try:
                    await self._flush()
                except Exception as e:
                    log.warning("progress update failed in %s: %s", self.route.channel, _err(e))
                finally:
                    self.flushing = False

    async def _pace(self) -> None:
        wait = self.last_write + self.s.update_interval - self.s.clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def _wrote(self) -> None:
        self.last_write = self.s.clock()

    async def _flush(self) -> None:
        if not self.tasks and not self.preview and not self.restart_stream:
            return
        await self.s.status.ensure(*self.status_key)
        if self.restart_stream:
            await self._drop_stream()
        if self.mode == "none":
            self.mode = "stream" if self.s.streaming and self.route.thread_ts else "fallback"
        if self.mode == "stream":
            try:
                await self._flush_stream()
                return
            except SlackApiError as e:
                if self.stream_ts is not None:
                    log.info("chat stream broke (%s); starting over", _err(e))
                    self.restart_stream = True
                    return
                log.info(
                    "chat streaming refused in %s (%s); falling back to post + update", self.route.channel, _err(e)
                )
                self.mode = "fallback"
        await self._flush_placeholder()

    def _pending_task_chunks(self) -> list[dict[str, Any]]:
        chunks = []
        for task in self.tasks.values():
            shown = self.shown_status.get(task.call_id)
            if shown == task.status:
                continue
            if shown is None and task.status != c.TASK_IN_PROGRESS:
                # finished before it was ever shown: still show it going in_progress -> complete/error
                chunks.append(task_chunk(Task(task.call_id, task.sub, task.task, c.TASK_IN_PROGRESS)))
            chunks.append(task_chunk(task))
        return chunks

    def _task_snapshot(self) -> dict[str, str]:
        """Task statuses as they are now (taken before a write: events may change them while it is under way)."""
        return {t.call_id: t.status for t in self.tasks.values()}

    def _stream_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"channel": self.route.channel, "thread_ts": self.route.thread_ts}
        if not self.route.is_dm:
            args["recipient_team_id"] = self.route.team
            args["recipient_user_id"] = self.recipient_user
        return args

    async def _flush_stream(self) -> None:
        snapshot = self._task_snapshot()
        chunks = self._pending_task_chunks()
        new_text = ""
        if self.preview.startswith(self.streamed):
            room = c.STREAM_PREVIEW_MAX_CHARS - slack_len(self.streamed)
            new_text = self.preview[len(self.streamed) :]
            if slack_len(new_text) > room:
                new_text = split_text(new_text, max(room, 1))[0] if room > 0 else ""
        if new_text:
            chunks.append(markdown_chunk(new_text))
        if not chunks:
            return
        if self.stream_ts is None:
            resp = await self.s.client.chat_startStream(
                **self._stream_args(), chunks=chunks, task_display_mode=c.TASK_DISPLAY_MODE
            )
            self.stream_ts = str(resp["ts"])
        else:
            await self.s.client.chat_appendStream(channel=self.route.channel, ts=self.stream_ts, chunks=chunks)
        self._wrote()
        self.streamed += new_text
        self.shown_status = snapshot

    async def _drop_stream(self) -> None:
        """Remove a stream whose preview text is no longer right (after a retry, or a broken stream)."""
        self.restart_stream = False
        ts, self.stream_ts = self.stream_ts, None
        self.streamed = ""
        self.shown_status = {}
        self.mode = "none"
        if ts is None:
            return
        with contextlib.suppress(SlackApiError):
            await self.s.client.chat_stopStream(channel=self.route.channel, ts=ts)
        try:
            await self.s.client.chat_delete(channel=self.route.channel, ts=ts)
        except SlackApiError as e:
            log.warning("could not remove a superseded preview in %s: %s", self.route.channel, _err(e))

    async def _flush_placeholder(self) -> None:
        text = placeholder_text(list(self.tasks.values()), self.preview)
        if text == self.placeholder_shown:
            return
        if self.placeholder_ts is None:
            resp = await self.s.client.chat_postMessage(
                channel=self.route.channel, thread_ts=self.route.thread_ts, markdown_text=text
            )
            self.placeholder_ts = str(resp["ts"])
        else:
            await self.s.client.chat_update(channel=self.route.channel, ts=self.placeholder_ts, markdown_text=text)
        self._wrote()
        self.placeholder_shown = text

    # ---- delivery -------------------------------------------------------------------------------------------------

    async def _stop_flushing(self) -> None:
        self.closed = True
        task = self.flush_task
        if task is None or task.done():
            return
        if not self.flushing:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def deliver(self, reply: Reply, resume: Resume | None) -> str:
        await self._stop_flushing()
        async with self.lock:
            try:
                body = reply_body(reply)
                if resume is not None:
                    rest = split_text(body[resume.end :], c.MESSAGE_PART_MAX_CHARS) if resume.end < len(body) else []
                    await self._post_parts(rest, first_part=resume.next_part, offset=resume.end)
                    return resume.first_ts
                if self.restart_stream:
                    await self._drop_stream()
                if self.mode == "stream" and self.stream_ts is not None:
                    ts = await self._finish_stream(body)
                    if ts is not None:
                        return ts
                if self.mode == "fallback" and self.placeholder_ts is not None:
                    ts = await self._finish_placeholder(body)
                    if ts is not None:
                        return ts
                parts = split_text(body, c.MESSAGE_PART_MAX_CHARS)
                return await self._post_parts(parts, first_part=1, offset=0)
            finally:
                await self.s.status.clear(*self.status_key)

    def _final_task_chunks(self) -> list[dict[str, Any]]:
        for task in self.tasks.values():
            if task.status == c.TASK_IN_PROGRESS:
                task.status = c.TASK_ERROR  # the turn ended without this sub-assistant's result
        return self._pending_task_chunks()

    async def _finish_stream(self, body: str) -> str | None:
        """Complete the stream with the reply; None when the reply must be posted afresh instead."""
        assert self.stream_ts is not None
        ts = self.stream_ts
        fits = body.startswith(self.streamed) and slack_len(self.streamed) <= c.STREAM_MESSAGE_MAX_CHARS
        if not fits:
            await self._drop_stream()
            return None
        parts = split_text(
            body, c.MESSAGE_PART_MAX_CHARS, first_limit=c.STREAM_MESSAGE_MAX_CHARS, first_min=len(self.streamed)
        )
        if not parts[0].startswith(self.streamed):
            await self._drop_stream()
            return None
        remainder = parts[0][len(self.streamed) :]
        pieces = split_text(remainder, c.STREAM_APPEND_MAX_CHARS) if remainder else []
        try:
            for piece in pieces[:-1]:
                await self._pace()
                await self.s.client.chat_appendStream(channel=self.route.channel, ts=ts, chunks=[markdown_chunk(piece)])
                self._wrote()
                self.streamed += piece
            chunks = self._final_task_chunks()
            if pieces:
                chunks.append(markdown_chunk(pieces[-1]))
            await self._pace()
            await self.s.client.chat_stopStream(
                channel=self.route.channel,
                ts=ts,
                chunks=chunks or None,
                metadata=reply_metadata(self.turn.id, 1, len(parts) == 1, len(parts[0])),
            )
            self._wrote()
        except SlackApiError as e:
            log.warning(
                "finishing the stream failed in %s (%s); posting the reply instead", self.route.channel, _err(e)
            )
            await self._drop_stream()
            return None
        self.stream_ts = None
        await self._post_parts(parts[1:], first_part=2, offset=len(parts[0]))
        return ts

    async def _finish_placeholder(self, body: str) -> str | None:
        assert self.placeholder_ts is not None
        parts = split_text(body, c.MESSAGE_PART_MAX_CHARS)
        try:
            await self._pace()
            await self.s.client.chat_update(
                channel=self.route.channel,
                ts=self.placeholder_ts,
                markdown_text=parts[0],
                metadata=reply_metadata(self.turn.id, 1, len(parts) == 1, len(parts[0])),
            )
            self._wrote()
        except SlackApiError as e:
            log.warning("updating the placeholder failed in %s (%s); posting the reply", self.route.channel, _err(e))
            with contextlib.suppress(SlackApiError):
                await self.s.client.chat_delete(channel=self.route.channel, ts=self.placeholder_ts)
            return None
        await self._post_parts(parts[1:], first_part=2, offset=len(parts[0]))
        return self.placeholder_ts

    async def _post_parts(self, parts: list[str], *, first_part: int, offset: int) -> str:
        """Post `parts` as messages numbered from `first_part`; returns the first one's ts."""
        first_ts = ""
        end = offset
        for i, part in enumerate(parts):
            end += len(part)
            if i:
                await asyncio.sleep(self.s.post_interval)
            resp = await self.s.client.chat_postMessage(
                channel=self.route.channel,
                thread_ts=self.route.thread_ts,
                markdown_text=part,
                metadata=reply_metadata(self.turn.id, first_part + i, i == len(parts) - 1, end),
            )
            first_ts = first_ts or str(resp["ts"])
        return first_ts
