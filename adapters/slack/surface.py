"""`SlackSurface`: the engine's view of Slack (implements `bot.types.Surface`).

Each turn is rendered by its own `TurnView` (turn_view.py): `deliver` retries, falls back (in the channel without
the thread, to the user directly) and raises `bot.types.Undeliverable` only when no way works; `find_delivery`
looks for a delivered reply by its message metadata (crash recovery only: conversations.replies is heavily rate
limited). `spawn` runs listener side work (a refusal note, suggested prompts) in the background, so that event
acknowledgements never wait on the Web API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import constants as c
from adapters.slack.keys import Route
from adapters.slack.retry import RetryPolicy
from adapters.slack.status import StatusBoard
from adapters.slack.turn_view import Resume, TurnView
from bot.types import Platform, Progress, Reply, TurnRef, Withdrawn

log = logging.getLogger(__name__)

_DELIVERED_MEMORY = 10_000


class SlackSurface:
    """The engine's view of Slack (implements `bot.types.Surface`)."""

    platform: Platform = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        status: StatusBoard,
        *,
        streaming: bool = True,
        update_interval: float = c.MESSAGE_UPDATE_INTERVAL_SECONDS,
        post_interval: float = c.POST_INTERVAL_SECONDS,
        bot_user_id: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.status = status
        self.streaming = streaming
        self.update_interval = update_interval
        self.post_interval = post_interval
        self.clock = clock or time.monotonic
        self.retry = retry or RetryPolicy()
        self._background: set[asyncio.Task[None]] = set()
        self._bot_user_id = bot_user_id
        self._views: dict[str, TurnView] = {}
        self._resume: dict[str, Resume] = {}
        self._delivered: OrderedDict[str, None] = OrderedDict()

    def _view(self, turn: TurnRef) -> TurnView:
        view = self._views.get(turn.id)
        if view is None or view.closed:
            view = self._views[turn.id] = TurnView(self, turn)
        return view

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        if turn.id in self._delivered:
            return  # late progress of a finished turn must not post anything
        await self._view(turn).on_progress(event)
        if isinstance(event, Withdrawn):  # no reply follows: nothing more to show for this turn
            self._views.pop(turn.id, None)

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        view = self._view(turn)
        try:
            return await view.deliver(reply, self._resume.pop(turn.id, None))
        finally:
            self._views.pop(turn.id, None)
            self._delivered[turn.id] = None
            while len(self._delivered) > _DELIVERED_MEMORY:
                self._delivered.popitem(last=False)

    async def settled(self, turn_id: str) -> None:
        """Wait until the progress of `turn_id` received so far has been written (or failed to be): its pending
        stream / placeholder update is done. For tests and benchmarks that need a deterministic call order."""
        view = self._views.get(turn_id)
        while view is not None and view.flush_task is not None and not view.flush_task.done():
            await asyncio.wait({view.flush_task})

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` in the background (cancelled by `close`); its failure is logged."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def find_delivery(self, turn: TurnRef) -> str | None:
        """Look for this turn's reply in its thread (by message metadata). Returns the ts of its first part when
        the whole reply is there; when only its first parts are, remembers where to resume and returns None.
        Errors propagate: the caller must not assume "not delivered" when Slack could not be asked.

        Only a resumed turn is looked for, so a message of ours without reply metadata posted after the turn's
        message is a live preview an earlier life of the process left behind (turns of a conversation never
        overlap): it is removed, or the user would keep a half-written answer beside the reply."""
        route = Route.from_mapping(turn.route)
        parts: dict[int, tuple[str, dict[str, Any]]] = {}
        leftovers: list[str] = []
        view = self._views.get(turn.id)
        live = {view.stream_ts, view.placeholder_ts} if view is not None else set()
        cursor: str | None = None
        for _ in range(c.FIND_DELIVERY_MAX_PAGES):
            if route.thread_ts:
                resp = await self.client.conversations_replies(
                    channel=route.channel,
                    ts=route.thread_ts,
                    include_all_metadata=True,
                    limit=c.FIND_DELIVERY_PAGE_SIZE,
                    cursor=cursor,
                )
            else:
                resp = await self.client.conversations_history(
                    channel=route.channel,
                    oldest=route.message_ts,
                    include_all_metadata=True,
                    limit=c.FIND_DELIVERY_PAGE_SIZE,
                    cursor=cursor,
                )
            for msg in resp.get("messages") or []:
                meta = msg.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") != c.REPLY_METADATA_EVENT_TYPE:
                    ts = str(msg.get("ts") or "")
                    if self._from_us(msg) and ts not in live and _ts_after(ts, route.message_ts):
                        leftovers.append(ts)
                    continue
                if payload.get("turn_id") != turn.id:
                    continue
                if not self._from_us(msg):
                    continue
                parts[int(payload.get("part", 1))] = (str(msg["ts"]), payload)
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        await self._remove_leftovers(route.channel, leftovers)
        if not parts:
            return None
        if any(p.get("last") for _, p in parts.values()):
            return parts[min(parts)][0]
        k = 0
        while k + 1 in parts:
            k += 1
        if k == 0:
            return None
        self._resume[turn.id] = Resume(first_ts=parts[1][0], end=int(parts[k][1].get("end", 0)), next_part=k + 1)
        return None

    async def _remove_leftovers(self, channel: str, leftovers: list[str]) -> None:
        for ts in leftovers:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_stopStream(channel=channel, ts=ts)  # a stream still open: end it first
            try:
                await self.client.chat_delete(channel=channel, ts=ts)
                log.info("removed a preview left by an interrupted turn in %s", channel)
            except SlackApiError as e:
                log.warning("could not remove a leftover preview in %s: %s", channel, e.response.get("error"))

    def _from_us(self, msg: dict[str, Any]) -> bool:
        me = self._bot_user_id()
        return bool(msg.get("bot_id")) or (me is not None and msg.get("user") == me)

    async def close(self) -> None:
        for view in list(self._views.values()):
            await view._stop_flushing()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.status.close()


def _ts_after(ts: str, other: str) -> bool:
    """Whether Slack timestamp `ts` ("1700000000.000100") is later than `other`; False when either is malformed."""
    try:
        seconds, _, micros = ts.partition(".")
        other_seconds, _, other_micros = other.partition(".")
        return (int(seconds), int(micros or 0)) > (int(other_seconds), int(other_micros or 0))
    except ValueError:
        return False
