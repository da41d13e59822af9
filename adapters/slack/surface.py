"""`SlackSurface`: the engine's view of Slack (implements `bot.types.Surface`).

Each turn is rendered by its own `TurnView` (turn_view.py); `find_delivery` looks for a delivered reply by its
message metadata (crash recovery only: conversations.replies is heavily rate limited).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import constants as c
from adapters.slack.keys import Route
from adapters.slack.status import StatusBoard
from adapters.slack.turn_view import Resume, TurnView
from bot.types import Platform, Progress, Reply, TurnRef

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
    ) -> None:
        self.client = client
        self.status = status
        self.streaming = streaming
        self.update_interval = update_interval
        self.post_interval = post_interval
        self.clock = clock or time.monotonic
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

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        view = self._view(turn)
        try:
            return await view.deliver(reply, self._resume.pop(turn.id, None))
        finally:
            self._views.pop(turn.id, None)
            self._delivered[turn.id] = None
            while len(self._delivered) > _DELIVERED_MEMORY:
                self._delivered.popitem(last=False)

    async def find_delivery(self, turn: TurnRef) -> str | None:
        """Look for this turn's reply in its thread (by message metadata). Returns the ts of its first part when
        the whole reply is there; when only its first parts are, remembers where to resume and returns None.
        Errors propagate: the caller must not assume "not delivered" when Slack could not be asked."""
        route = Route.from_mapping(turn.route)
        parts: dict[int, tuple[str, dict[str, Any]]] = {}
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
                if meta.get("event_type") != c.REPLY_METADATA_EVENT_TYPE or payload.get("turn_id") != turn.id:
                    continue
                if not self._from_us(msg):
                    continue
                parts[int(payload.get("part", 1))] = (str(msg["ts"]), payload)
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
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

    def _from_us(self, msg: dict[str, Any]) -> bool:
        me = self._bot_user_id()
        return bool(msg.get("bot_id")) or (me is not None and msg.get("user") == me)

    async def close(self) -> None:
        for view in list(self._views.values()):
            await view._stop_flushing()
        await self.status.close()
