"""`/switchboard <text>` and the "Reset this conversation" message shortcut.

Both ack first (Slack wants it within 3 s), then hand the text to `bot.command`, which parses and authorises it,
and answer ephemerally through the response_url (chat.postEphemeral when that fails, and the user's DM with the app
when the bot is not in the channel: slash commands work in any channel, bot posts only where it is a member).
Slash commands cannot be used inside threads (Slack's limitation), so in a channel the slash command carries no
conversation; the message shortcut, used on any message of a thread, resets that thread's conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from adapters.slack import constants as c
from adapters.slack.keys import channel_key, conversation_key, is_dm_channel
from adapters.slack.listeners.deps import Deps
from bot.types import Actor, CommandContext, CommandResult

log = logging.getLogger(__name__)

#: response_url accepts up to 5 replies
RESPONSE_URL_MAX_POSTS = 5
#: command words after which the thinking indicators of the affected threads are cleared
_CLEARING_COMMANDS = frozenset({"reset", "cancel"})

Respond = Callable[..., Awaitable[Any]]
#: chat.postEphemeral errors meaning the bot cannot post in that channel at all
_NOT_HERE = frozenset({"not_in_channel", "channel_not_found"})


async def run_command(
    deps: Deps, *, team: str, channel: str, user: str, conversation: str | None, text: str
) -> CommandResult:
    actor = Actor(platform=c.PLATFORM, user=user, platform_admin=await deps.admins.is_admin(user))
    ctx = CommandContext(actor=actor, channel=channel_key(team, channel), conversation=conversation)
    try:
        result = await deps.bot.command(ctx, text)
    except Exception:
        log.exception("command failed")
        return CommandResult(ok=False, text="Sorry, that command failed. Please try again in a moment.")
    if result.ok:
        await _clear_indicators(deps, channel, text)
    return result


async def _clear_indicators(deps: Deps, channel: str, text: str) -> None:
    """After a successful reset/cancel, clear the indicators it concerns (the engine ends the turns too)."""
    words = [w.lower() for w in text.split()]
    if not words or words[0] not in _CLEARING_COMMANDS:
        return
    if words[0] == "reset" and len(words) > 1 and words[1] in ("all", "everything"):
        await deps.status.clear_where(lambda _ch, _ts: True)
    elif (words[0] == "reset" and len(words) > 1 and words[1] == "channel") or is_dm_channel(channel):
        await deps.status.clear_where(lambda ch, _ts: ch == channel)


async def answer(deps: Deps, respond: Respond, *, channel: str, user: str, text: str) -> None:
    parts = c.MESSAGE_TEXT.split(text or "Done.")[:RESPONSE_URL_MAX_POSTS]
    for part in parts:
        try:
            resp = await respond(text=part, response_type="ephemeral", replace_original=False)
            failure = None if getattr(resp, "status_code", 200) == 200 else f"HTTP {resp.status_code}"
        except Exception as e:
            failure = type(e).__name__
        if failure is not None:
            log.info("response_url failed (%s); using chat.postEphemeral", failure)
            try:
                await deps.surface.client.chat_postEphemeral(channel=channel, user=user, text=part)
            except SlackApiError as e:
                if e.response.get("error") not in _NOT_HERE:
                    raise
                log.info("chat.postEphemeral: %s; answering in the user's DM", e.response.get("error"))
                await deps.surface.client.chat_postMessage(channel=user, text=part)


def register(app: AsyncApp, deps: Deps) -> None:
    # The app processes events before acknowledging them (app.py): commands are acknowledged at once and do
    # their work in a lazy listener, so Slack's 3-second deadline never waits for the engine.
    async def ack_now(ack: Callable[[], Awaitable[None]]) -> None:
        await ack()

    async def on_slash_command(body: dict[str, Any], respond: Respond) -> None:
        team, channel, user = str(body.get("team_id", "")), str(body.get("channel_id", "")), str(body["user_id"])
        conversation = conversation_key(team, channel, None) if is_dm_channel(channel) else None
        result = await run_command(
            deps, team=team, channel=channel, user=user, conversation=conversation, text=str(body.get("text", ""))
        )
        await answer(deps, respond, channel=channel, user=user, text=result.text)

    async def on_reset_shortcut(body: dict[str, Any], respond: Respond) -> None:
        team = str((body.get("team") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id", ""))
        user = str((body.get("user") or {}).get("id", ""))
        message = body.get("message") or {}
        thread = message.get("thread_ts") or (None if is_dm_channel(channel) else message.get("ts"))
        conversation = conversation_key(team, channel, thread)
        result = await run_command(deps, team=team, channel=channel, user=user, conversation=conversation, text="reset")
        if result.ok and thread:
            await deps.status.clear(channel, str(thread))
        await answer(deps, respond, channel=channel, user=user, text=result.text)

    app.command(c.SLASH_COMMAND)(ack=ack_now, lazy=[on_slash_command])
    app.shortcut(c.RESET_SHORTCUT_CALLBACK_ID)(ack=ack_now, lazy=[on_reset_shortcut])
