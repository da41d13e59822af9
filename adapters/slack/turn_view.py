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
  number and end offset, so `find_delivery` finds a delivered reply (and resumes a partly posted one);
- every call of the delivery is retried on transient failures (retry.py); a part refused as too long is split
  smaller; a preview that must go is deleted with retries (a leftover half answer reads as a second reply);
- a reply that still cannot go where it belongs is posted in the channel without the thread (when only the thread
  refused it), else sent to the user directly (the app's DM), with a first line saying why; when no way works,
  `deliver` raises `Undeliverable`. The indicator is cleared however delivery ends.

Longer than our usual module on purpose: it is one turn's screen state (indicator, stream or placeholder, reply),
whose parts must agree on what is already posted.
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
    defused_preview,
    markdown_chunk,
    placeholder_text,
    preview_metadata,
    reply_body,
    reply_metadata,
    task_chunk,
)
from adapters.slack.retry import (
    GONE_ERRORS,
    THREAD_ERRORS,
    classify,
    error_name,
    may_have_taken_effect,
    with_retries,
)
from bot.types import (
    Delegated,
    Done,
    Failed,
    HandedOff,
    Progress,
    Reply,
    Retrying,
    Started,
    SubFinished,
    TextDelta,
    TurnRef,
    Undeliverable,
    Withdrawn,
)

if TYPE_CHECKING:
    from adapters.slack.surface import SlackSurface

log = logging.getLogger(__name__)

Mode = Literal["none", "stream", "fallback"]


#: first line of a reply that could not go into its thread and was posted in the channel instead
NOT_IN_THREAD_NOTE = "_(I could not reply in the thread, so here is my answer.)_\n\n"


def dm_note(channel: str) -> str:
    """First line of a reply that could not be posted in its channel and was sent to the user directly."""
    return f"_(I could not post my answer in <#{channel}>, so here it is.)_\n\n"


def _err(e: BaseException) -> str:
    return error_name(e)


def _worth_deleting_again(e: BaseException) -> bool:
    return _err(e) not in GONE_ERRORS and _err(e) != "cant_delete_message"


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
        self.preview = ""  # what may be shown of `raw_preview`: defused (no mentions), its unfinished tail held back
        self.raw_preview = ""
        self.mode: Mode = "none"
        self.stream_ts: str | None = None
        self.streamed = ""  # answer text already in the stream message
        self.shown_status: dict[str, str] = {}  # task statuses the stream message shows
        self.restart_stream = False
        self.placeholder_ts: str | None = None
        self.placeholder_maybe_posted = False  # a placeholder post failed in a way that may have posted it
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
        elif isinstance(event, HandedOff):
            # a finished task line: "handed to editor", with the reason as its details
            key = f"handoff_{len(self.tasks)}"
            self.tasks[key] = Task(key, f"handed to {event.to_agent}", event.reason, c.TASK_COMPLETE)
        elif isinstance(event, TextDelta):
            self.raw_preview += event.text
            self.preview = defused_preview(self.raw_preview)
        elif isinstance(event, Retrying):
            # only the proxy streams text: a sub-assistant's retry leaves the preview as it is
            if event.who not in {t.sub for t in self.tasks.values()}:
                self.preview = self.raw_preview = ""
                if self.streamed:
                    self.restart_stream = True
            await self.s.status.retrying(channel, thread, event.words)
        elif isinstance(event, Failed | Withdrawn):
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
            room = c.STREAM_PREVIEW_MAX_CHARS - c.MESSAGE_TEXT.length(self.streamed)
            new_text = self.preview[len(self.streamed) :]
            if c.MESSAGE_TEXT.length(new_text) > room:
                new_text = c.MESSAGE_TEXT.split(new_text, limit=room)[0] if room > 0 else ""
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
        with contextlib.suppress(Exception):
            await self.s.client.chat_stopStream(channel=self.route.channel, ts=ts)
        await self._remove(ts)

    async def _remove(self, ts: str) -> None:
        """Delete a preview of ours that is no longer right; retried whatever the error (a leftover half answer
        beside the reply would read as a second reply), unless the message is already gone."""

        async def delete() -> object:
            return await self.s.client.chat_delete(channel=self.route.channel, ts=ts)

        try:
            await with_retries(delete, self.s.retry, "removing a superseded preview", retry=_worth_deleting_again)
        except Exception as e:
            if _err(e) not in GONE_ERRORS:
                log.warning("could not remove a superseded preview in %s: %s", self.route.channel, _err(e))

    async def _flush_placeholder(self) -> None:
        text = placeholder_text(list(self.tasks.values()), self.preview)
        if text == self.placeholder_shown:
            return
        if self.placeholder_ts is None and self.placeholder_maybe_posted:
            # the last post may have gone through before its answer was lost: a second placeholder would stay
            self.placeholder_ts = await self._posted_part(self.route.channel, self.route.thread_ts, None)
            self.placeholder_maybe_posted = False
        if self.placeholder_ts is None:
            try:
                resp = await self.s.client.chat_postMessage(
                    channel=self.route.channel, thread_ts=self.route.thread_ts, markdown_text=text,
                    metadata=preview_metadata(self.turn.id),
                )
            except Exception as e:
                self.placeholder_maybe_posted = may_have_taken_effect(e)
                raise
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
                try:
                    return await self._deliver_here(body, resume)
                except Exception as e:
                    log.warning(
                        "could not post the reply in %s (%s); trying another way", self.route.channel, _err(e)
                    )
                    return await self._deliver_elsewhere(body, e)
            finally:
                await self.s.status.clear(*self.status_key)

    async def _deliver_here(self, body: str, resume: Resume | None) -> str:
        """Where the reply belongs: into the stream or the placeholder when they can take it, else new messages
        in the thread (each call retried on transient failures)."""
        if resume is not None:
            rest = c.MESSAGE_TEXT.split(body[resume.end :]) if resume.end < len(body) else []
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
        return await self._post_parts(c.MESSAGE_TEXT.split(body), first_part=1, offset=0)

    async def _deliver_elsewhere(self, body: str, failure: Exception) -> str:
        """The reply could not go where it belongs: post it into the channel without the thread (when only the
        thread refused it), else to the user directly (the app's DM with them). Raises `Undeliverable` when no
        way works."""
        ways: list[tuple[str, str, str]] = []
        if self.route.thread_ts and _err(failure) in THREAD_ERRORS:
            ways.append(("in the channel", self.route.channel, NOT_IN_THREAD_NOTE))
        if self.recipient_user and not self.route.is_dm:
            ways.append(("to the user directly", self.recipient_user, dm_note(self.route.channel)))
        for how, channel, note in ways:
            try:
                ts = await self._post_parts(
                    c.MESSAGE_TEXT.split(note + body),
                    first_part=1,
                    offset=0,
                    channel=channel,
                    in_thread=False,
                )
            except Exception as e:
                log.warning("posting the reply %s failed too (%s)", how, _err(e))
                continue
            log.info("the reply for %s was delivered %s", self.route.channel, how)
            return ts
        raise Undeliverable(_err(failure), f"channel {self.route.channel}, {len(ways)} other way(s) failed too")

    def _final_task_chunks(self) -> list[dict[str, Any]]:
        for task in self.tasks.values():
            if task.status == c.TASK_IN_PROGRESS:
                task.status = c.TASK_ERROR  # the turn ended without this sub-assistant's result
        return self._pending_task_chunks()

    async def _finish_stream(self, body: str) -> str | None:
        """Complete the stream with the reply; None when the reply must be posted afresh instead."""
        assert self.stream_ts is not None
        ts = self.stream_ts
        fits = body.startswith(self.streamed) and c.MESSAGE_TEXT.length(self.streamed) <= c.STREAM_MESSAGE_MAX_CHARS
        if not fits:
            await self._drop_stream()
            return None
        parts = c.MESSAGE_TEXT.split(body, first_limit=c.STREAM_MESSAGE_MAX_CHARS, first_min=len(self.streamed))
        if not parts[0].startswith(self.streamed):
            await self._drop_stream()
            return None
        remainder = parts[0][len(self.streamed) :]
        pieces = c.MESSAGE_TEXT.split(remainder, limit=c.STREAM_APPEND_MAX_CHARS) if remainder else []
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
        except Exception as e:
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
        parts = c.MESSAGE_TEXT.split(body)
        placeholder_ts = self.placeholder_ts

        async def update() -> object:
            return await self.s.client.chat_update(
                channel=self.route.channel,
                ts=placeholder_ts,
                markdown_text=parts[0],
                metadata=reply_metadata(self.turn.id, 1, len(parts) == 1, len(parts[0])),
            )

        try:
            await self._pace()
            await with_retries(update, self.s.retry, "updating the placeholder into the reply")
            self._wrote()
        except Exception as e:
            log.warning("updating the placeholder failed in %s (%s); posting the reply", self.route.channel, _err(e))
            self.placeholder_ts = None
            await self._remove(placeholder_ts)
            return None
        await self._post_parts(parts[1:], first_part=2, offset=len(parts[0]))
        return self.placeholder_ts

    async def _posted_part(self, channel: str, thread: str | None, number: int | None) -> str | None:
        """The ts of part `number` of this turn's reply (None: of its placeholder) if it is in `channel` (`thread`),
        found by its metadata."""
        event_type = c.PREVIEW_METADATA_EVENT_TYPE if number is None else c.REPLY_METADATA_EVENT_TYPE
        cursor: str | None = None
        for _ in range(c.FIND_DELIVERY_MAX_PAGES):
            if thread:  # oldest first: read on to the end of the thread
                resp = await self.s.client.conversations_replies(
                    channel=channel, ts=thread, include_all_metadata=True, limit=c.FIND_DELIVERY_PAGE_SIZE,
                    cursor=cursor,
                )
            else:  # newest first: a part just posted is on the first page
                resp = await self.s.client.conversations_history(
                    channel=channel, include_all_metadata=True, limit=c.FIND_PART_PAGE_SIZE
                )
            for msg in resp.get("messages") or []:
                meta = msg.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if (
                    meta.get("event_type") == event_type
                    and payload.get("turn_id") == self.turn.id
                    and (number is None or int(payload.get("part", 0)) == number)
                ):
                    return str(msg["ts"])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not thread or not cursor:
                return None
        return None

    async def _post_parts(
        self,
        parts: list[str],
        *,
        first_part: int,
        offset: int,
        channel: str | None = None,
        in_thread: bool = True,
    ) -> str:
        """Post `parts` as messages numbered from `first_part` (into the turn's thread unless told otherwise);
        returns the first one's ts. Each post is retried on transient failures; a part refused as too long is
        split again, smaller."""
        target = channel or self.route.channel
        thread = self.route.thread_ts if in_thread else None
        queue = list(parts)
        first_ts = ""
        end = offset
        number = first_part
        limit = c.MESSAGE_PART_MAX_CHARS
        while queue:
            part = queue.pop(0)
            if number != first_part:
                await asyncio.sleep(self.s.post_interval)

            maybe_posted = False

            async def post(part: str = part, number: int = number, last: bool = not queue, stop: int = end) -> Any:
                nonlocal maybe_posted
                if maybe_posted:  # the last try may have posted it before its answer was lost: never post twice
                    ts = await self._posted_part(target, thread, number)
                    if ts is not None:
                        return {"ts": ts}
                try:
                    return await self.s.client.chat_postMessage(
                        channel=target,
                        thread_ts=thread,
                        markdown_text=part,
                        metadata=reply_metadata(self.turn.id, number, last, stop + len(part)),
                    )
                except Exception as e:
                    maybe_posted = maybe_posted or may_have_taken_effect(e)
                    raise

            try:
                resp = await with_retries(post, self.s.retry, f"posting part {number} of a reply")
            except Exception as e:
                if classify(e) != "too_long" or limit <= c.MIN_PART_CHARS:
                    raise
                limit = max(c.MIN_PART_CHARS, min(limit, c.MESSAGE_TEXT.length(part)) // 2)
                log.warning("Slack refused a reply part as too long; splitting it at %d characters", limit)
                queue[0:0] = c.MESSAGE_TEXT.split(part, limit=limit)
                continue
            end += len(part)
            number += 1
            first_ts = first_ts or str(resp["ts"])
        return first_ts
