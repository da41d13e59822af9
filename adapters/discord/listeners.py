"""Which Discord messages start or continue a conversation, and the `Inbound` each becomes.

- a DM to the bot;
- a message mentioning the bot (its user or its managed role) in a channel or thread;
- a reply to one of the bot's messages;
- any message in a thread the bot owns (opened by `/ask`), provided its text is readable: without the privileged
  Message Content intent Discord delivers such messages with empty content, and they are ignored.

Bots, webhooks, system messages and our own messages are ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import discord

from adapters.discord.routing import Route, keys_for
from bot.types import BotLike, Inbound

log = logging.getLogger("switchboard.discord.messages")

EMPTY_MENTION_HINT = "Hi! Mention me with a question, or use `/ask`."
HIDDEN_REPLY_HINT = "I can only read replies that mention me: keep the @ ping on when you reply, or use `/ask`."
ACCEPT_FAILED_TEXT = "Sorry, I could not take that message just now. Please try again in a moment."
_USER_MESSAGE_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def access_facts(author: object, in_dm: bool) -> dict[str, Any]:
    """What the engine's access lists need to know of a message's author: role ids, DM or not, and whether the
    member has Manage Server (the platform's admins, always allowed). A DM author is a `User`, with neither."""
    roles = tuple(str(r.id) for r in getattr(author, "roles", ()) if not getattr(r, "is_default", lambda: False)())
    perms = getattr(author, "guild_permissions", None)
    return {"roles": roles, "dm": in_dm, "platform_admin": bool(perms is not None and perms.manage_guild)}


class MessageListener:
    def __init__(self, bot: BotLike, client: discord.Client, *, message_content: bool) -> None:
        self._bot = bot
        self._client = client
        self._message_content = message_content
        self._thread_cache: dict[int, discord.Thread | None] = {}
        #: called with each message and what became of it (logs, metrics, tests)
        self.observers: list[Callable[[discord.Message, str], None]] = []

    async def on_message(self, message: discord.Message) -> None:
        try:
            outcome = await self._handle(message)
        except Exception:
            log.exception("handling message %s failed", message.id)
            outcome = "error"
        log.debug("message %s: %s", message.id, outcome)
        for observer in self.observers:
            observer(message, outcome)

    async def _handle(self, message: discord.Message) -> str:
        """Returns what became of the message: accepted, duplicate, hint, refused, or ignored:<why>."""
        me = self._client.user
        if me is None or message.author.id == me.id:
            return "ignored:self"
        if message.author.bot or message.webhook_id is not None:
            return "ignored:bot"
        if message.type not in _USER_MESSAGE_TYPES:
            return "ignored:system"
        guild_id = message.guild.id if message.guild is not None else getattr(message.channel, "guild_id", None)
        channel = await self._resolve_channel(message.channel, guild_id)
        in_dm = guild_id is None
        mentioned = self._mentions_me(message, me.id)
        replied_to_me = self._replies_to_me(message, me.id)
        owned_thread = isinstance(channel, discord.Thread) and channel.owner_id == me.id
        if not (in_dm or mentioned or replied_to_me or owned_thread):
            return "ignored:not-for-us"
        text = self._text(message, me.id)
        if not text:
            if in_dm or mentioned:
                await self._reply(message, EMPTY_MENTION_HINT)
                return "hint"
            if replied_to_me:  # without the intent Discord hides the text of a reply that does not ping us
                await self._reply(message, HIDDEN_REPLY_HINT if not self._message_content else EMPTY_MENTION_HINT)
                return "hint"
            return "ignored:unreadable"  # a thread we own, without the Message Content intent
        conversation, channel_key = keys_for(channel, guild_id)
        inbound = Inbound(
            platform="discord",
            event_id=str(message.id),
            conversation=conversation,
            channel=channel_key,
            user=str(message.author.id),
            text=text,
            route=Route("message", message.channel.id, message.id, guild_id).to_mapping(),
            **access_facts(message.author, in_dm),
        )
        try:
            accepted = await self._bot.accept(inbound)
        except ValueError as exc:  # bot.types.InvalidInbound: the text is meant for the user
            log.info("message %s refused: %s", message.id, exc)
            await self._reply(message, f"⚠️ {exc}" if str(exc) else ACCEPT_FAILED_TEXT)
            return "refused"
        except Exception:
            log.exception("accept failed for message %s", message.id)
            await self._reply(message, ACCEPT_FAILED_TEXT)
            return "error"
        return "duplicate" if accepted.duplicate else "accepted"

    async def _resolve_channel(self, channel: object, guild_id: int | None) -> object:
        """A thread not in discord.py's cache arrives as a PartialMessageable: fetch it once to learn its owner."""
        if guild_id is None or not isinstance(channel, discord.PartialMessageable):
            return channel
        if channel.id not in self._thread_cache:
            try:
                fetched = await self._client.fetch_channel(channel.id)
            except (discord.HTTPException, aiohttp.ClientError) as exc:
                log.info("cannot fetch channel %s: %s", channel.id, exc)
                return channel
            self._thread_cache[channel.id] = fetched if isinstance(fetched, discord.Thread) else None
        return self._thread_cache[channel.id] or channel

    @staticmethod
    def _mentions_me(message: discord.Message, me: int) -> bool:
        if me in message.raw_mentions or any(user.id == me for user in message.mentions):
            return True
        guild = message.guild
        own_role = guild.self_role if guild is not None else None
        return own_role is not None and own_role.id in message.raw_role_mentions

    @staticmethod
    def _replies_to_me(message: discord.Message, me: int) -> bool:
        reference = message.reference
        if reference is None:
            return False
        target = reference.resolved or reference.cached_message
        return isinstance(target, discord.Message) and target.author.id == me

    @staticmethod
    def _text(message: discord.Message, me: int) -> str:
        text = re.sub(rf"<@!?{me}>", "", message.content)
        guild = message.guild
        own_role = guild.self_role if guild is not None else None
        if own_role is not None:
            text = text.replace(f"<@&{own_role.id}>", "")
        text = text.strip()
        files = [f"[attachment: {a.filename}]({a.url})" for a in message.attachments]
        return "\n".join([text, *files]).strip() if files else text

    @staticmethod
    async def _reply(message: discord.Message, text: str) -> None:
        try:
            await message.reply(text, mention_author=False, allowed_mentions=discord.AllowedMentions.none())
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            log.info("could not answer message %s: %s", message.id, exc)
