"""Messages: mentions in channels, replies in threads the bot is in, DMs and assistant-view threads.

Slack sends a channel mention twice (app_mention and message.channels, with different event ids): mentions outside
DMs are taken from app_mention only, and a small memory of handled messages guards against any other double.
The engine's `accept` dedupes by Slack's event_id, which is stable across Slack's own retries.

The event is acknowledged when the listener returns (the app processes before responding, so that an event is
stored before Slack forgets it): nothing here waits on a Web API call. The thinking indicator and the note to a
user whose message was refused go out in the background, so neither a slow call nor the SDK's sleep on a 429's
Retry-After can push the acknowledgement past Slack's 3 seconds.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from adapters.slack.constants import PLATFORM
from adapters.slack.keys import Route, channel_key, conversation_key, is_dm_channel
from adapters.slack.listeners.deps import Deps
from adapters.slack.retry import error_name
from bot.types import Inbound

try:
    from bot.types import InvalidInbound
except ImportError:  # a contract without it: the engine never refuses a message

    class InvalidInbound(ValueError):  # type: ignore[no-redef]
        pass


log = logging.getLogger(__name__)

#: message subtypes that are still a person writing to us; everything else (bot_message, message_changed,
#: message_deleted, channel_join, ...) is ignored early
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_HANDLED_MEMORY = 5_000
ACCEPT_FAILED_TEXT = "Sorry, I could not take that message just now; please send it again in a moment."


def strip_mentions(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)
    return text.strip()


def mentions(text: str, bot_user_id: str | None) -> bool:
    return bool(bot_user_id) and re.search(rf"<@{re.escape(str(bot_user_id))}(\|[^>]*)?>", text) is not None


def is_from_person(event: dict[str, Any], bot_user_id: str | None) -> bool:
    subtype = event.get("subtype")
    if subtype is not None and (not isinstance(subtype, str) or subtype not in USER_SUBTYPES):
        return False  # (an unhashable subtype must not raise: the event is simply not a person writing)
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    return bool(user) and user != bot_user_id


class MessageHandler:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._handled: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: called after each message event with its outcome: accepted | duplicate | seen | ignored | refused | error
        self.observers: list[Callable[[dict[str, Any], str], None]] = []

    async def route(
        self, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None, *, via_mention: bool
    ) -> Inbound | None:
        """The Inbound for this event, or None when it is not for us."""
        if not is_from_person(event, bot_user_id):
            return None
        channel = str(event.get("channel") or "")
        ts = str(event.get("ts") or "")
        if not channel or not ts:
            return None
        raw = str(event.get("text") or "")
        text = strip_mentions(raw, bot_user_id)
        if not text:
            return None
        team = str(body.get("team_id") or event.get("team") or "")
        thread_ts = event.get("thread_ts") or None
        dm = is_dm_channel(channel, event.get("channel_type"))
        if dm:
            conv_thread = thread_ts
        elif via_mention:
            conv_thread = thread_ts or ts
        else:
            if mentions(raw, bot_user_id) or not thread_ts:
                return None  # mentions arrive as app_mention; top-level chatter is not for us
            conv_thread = thread_ts
        conversation = conversation_key(team, channel, conv_thread)
        if not dm and not via_mention and not await self.deps.threads.knows(conversation):
            return None
        route = Route(
            team=team,
            channel=channel,
            user=str(event["user"]),
            message_ts=ts,
            thread_ts=conv_thread,
            place="dm" if dm else "channel",
        )
        return Inbound(
            platform=PLATFORM,
            event_id=str(body.get("event_id") or f"{channel}:{ts}"),
            conversation=conversation,
            channel=channel_key(team, channel),
            user=str(event["user"]),
            text=text,
            route=route.as_mapping(),
            roles=self.deps.usergroups.of(str(event["user"])) if self.deps.usergroups else (),
            dm=dm,
        )

    async def handle(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, *, via_mention: bool
    ) -> None:
        outcome = "error"
        try:
            outcome = await self._handle(body, event, context, via_mention=via_mention)
        finally:
            for observer in self.observers:
                observer(event, outcome)

    async def _handle(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext, *, via_mention: bool
    ) -> str:
        inbound = await self.route(body, event, context.bot_user_id, via_mention=via_mention)
        if inbound is None:
            return "ignored"
        key = (str(event["channel"]), str(event["ts"]))
        if key in self._handled:
            return "seen"
        route = Route.from_mapping(inbound.route)
        status = self.deps.status
        clears_before = status.clears(route.channel, route.status_thread_ts)
        try:
            accepted = await self.deps.bot.accept(inbound)
        except InvalidInbound as e:
            self._remember(key)
            self.deps.surface.spawn(self._tell(route, str(e)), f"slack-refusal-{route.message_ts}")
            return "refused"
        except Exception:  # the engine could not store it (database full or read-only): say so, do not go silent
            log.exception("accepting message %s in %s failed", inbound.event_id, route.channel)
            self._remember(key)
            self.deps.surface.spawn(self._tell(route, ACCEPT_FAILED_TEXT), f"slack-refusal-{route.message_ts}")
            return "error"
        self._remember(key)
        self.deps.threads.add(inbound.conversation)
        if accepted.duplicate:
            return "duplicate"
        # right after the accept, not waiting for the turn; skipped if the turn already finished meanwhile
        status.begin_soon(route.channel, route.status_thread_ts, unless_cleared_since=clears_before)
        return "accepted"

    async def _tell(self, route: Route, text: str) -> None:
        """Say why a message cannot be answered, to its author only."""
        try:
            await self.deps.surface.client.chat_postEphemeral(
                channel=route.channel, user=route.user, text=text, thread_ts=route.thread_ts
            )
        except Exception as e:
            log.warning("could not tell the user their message was refused: %s", error_name(e))

    def _remember(self, key: tuple[str, str]) -> None:
        self._handled[key] = None
        while len(self._handled) > _HANDLED_MEMORY:
            self._handled.popitem(last=False)


def register(app: AsyncApp, deps: Deps) -> MessageHandler:
    handler = MessageHandler(deps)

    @app.event("app_mention")
    async def on_app_mention(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await handler.handle(body, event, context, via_mention=True)

    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await handler.handle(body, event, context, via_mention=False)

    return handler
