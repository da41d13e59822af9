"""Slash commands. Every handler acknowledges first (defer, within Discord's 3 s) and only then does anything slow.

| command | engine text | who | reply |
|---|---|---|---|
| `/ask prompt` | (a conversation message) | anyone | public: a thread, or the answer in place |
| `/reset` | `reset` | the conversation's starter or an admin (engine decides) | ephemeral |
| `/status` | `status` | anyone | ephemeral |
| `/assistants` | `assistants` | anyone | ephemeral |
| `/help` | `help` | anyone | ephemeral |
| `/admin reset-channel` | `reset channel` | Manage Server | ephemeral |
| `/admin reset-all confirm:True` | `reset all` | Manage Server | ephemeral |
| `/admin cancel` | `cancel` | Manage Server | ephemeral |
| `/admin audit` | `audit` | Manage Server | ephemeral |
| `/admin handoff assistant:NAME` | `handoff NAME` | Manage Server | ephemeral |

`/admin` is one group so that a server can hide or grant all of it at once (Server Settings > Integrations). It is
marked guild-only with default permission Manage Server, but since a server may change those defaults, each
subcommand also runs a real check (`has_permissions(manage_guild=True)` on the member's resolved permissions, and
a guild check): a refused user gets a plain ephemeral answer and the engine is never called.

The acknowledgement (defer) is retried on transient failures (a reset, a 5xx discord.py gave up on) for as long as
Discord's 3 seconds allow; a retry answered "already acknowledged" means the first try took effect. The other calls
of `/ask` are retried the same way (retry.py); a thread that cannot be opened means answering in place.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import discord
from discord import app_commands

from adapters.discord.constants import (
    INTERACTION_ACK_DEADLINE,
    INTERACTION_ALREADY_ACKNOWLEDGED,
    MESSAGE_CONTENT_LIMIT,
    MESSAGE_TEXT,
    SLASH_STRING_OPTION_LIMIT,
    THREAD_NAME_LIMIT,
    UNKNOWN_INTERACTION,
)
from adapters.discord.listeners import access_facts
from adapters.discord.rendering import nonce_for
from adapters.discord.retry import CALL_ERRORS, is_transient, reason, retry_after, with_retries
from adapters.discord.routing import Route, channel_key, conversation_key, keys_for
from adapters.discord.settings import DiscordSettings
from adapters.discord.surface import NO_MENTIONS, DiscordSurface
from bot.backoff import backoff_delay
from bot.types import Actor, BotLike, CommandContext, CommandResult, Inbound

log = logging.getLogger("switchboard.discord.commands")

T = TypeVar("T")

NEED_MANAGE_SERVER = "You need the **Manage Server** permission to use this command."
GUILD_ONLY = "This command only works inside a server."
COMMAND_FAILED = "Something went wrong while running that command; the error was logged for the operator."
ACCEPT_FAILED = "Sorry, I could not take that question just now. Please try again in a moment."
UNKNOWN_COMMAND = "This bot has no such command any more (Discord may still list an old one). Try `/help`."
RESET_ALL_UNCONFIRMED = "Nothing was reset. Run `/admin reset-all confirm:True` to reset every conversation."


def is_platform_admin(interaction: discord.Interaction) -> bool:
    """Discord's own notion of an admin: Manage Server (or Administrator) in this guild."""
    if interaction.guild_id is None:
        return False
    permissions = interaction.permissions
    return permissions.manage_guild or permissions.administrator


def _require_guild(interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return True


def _clip_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


HANDOFF_NAME_LIMIT = 40  # team member names are at most 40 characters (bot.config.NAME_PATTERN)
ENGINE_TEXT = "engine_text"  # Command.extras key: the engine command an admin slash command stands for


class SwitchboardTree(app_commands.CommandTree):
    handlers: CommandHandlers | None = None

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, discord.NotFound) and cause.code == UNKNOWN_INTERACTION:
            # acknowledged too late (the event reached us after Discord's 3 s): nothing can be sent for it any more
            log.warning(
                "/%s from user %s arrived too late to acknowledge; Discord dropped it",
                _name(interaction),
                interaction.user.id,
            )
            return
        engine_text = interaction.command.extras.get(ENGINE_TEXT) if interaction.command else None
        if isinstance(error, app_commands.MissingPermissions) and engine_text and self.handlers is not None:
            # No Manage Server: the engine still decides (admins listed in the team file are allowed) and audits
            # the refusal, so every refused admin action is on record.
            log.info("/%s by %s without Manage Server: the engine decides", _name(interaction), interaction.user.id)
            await self.handlers.run(interaction, engine_text)
            return
        if isinstance(error, app_commands.MissingPermissions):
            text = NEED_MANAGE_SERVER
            log.info(
                "refused /%s for user %s: missing %s",
                _name(interaction),
                interaction.user.id,
                ", ".join(error.missing_permissions),
            )
        elif isinstance(error, app_commands.NoPrivateMessage):
            text = GUILD_ONLY
        elif isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            # still registered on Discord (an older version's command, or its options changed): not our failure
            log.warning("/%s from user %s is not a command of this version: %s", _name(interaction),
                        interaction.user.id, error)
            text = UNKNOWN_COMMAND
        elif isinstance(error, app_commands.CheckFailure):
            text = "You are not allowed to use this command here."
        else:
            log.error("command /%s failed", _name(interaction), exc_info=error)
            text = COMMAND_FAILED
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except Exception as exc:
            log.info("could not tell the user about a command error: %s", exc)


def _name(interaction: discord.Interaction) -> str:
    command = interaction.command
    return command.qualified_name if command is not None else "?"


class CommandHandlers:
    def __init__(self, bot: BotLike, surface: DiscordSurface, settings: DiscordSettings) -> None:
        self._bot = bot
        self._surface = surface
        self._settings = settings

    def install(self, tree: app_commands.CommandTree) -> None:
        handlers = self

        @tree.command(name="ask", description="Ask the team of assistants a question")
        @app_commands.describe(prompt="Your question or task")
        async def ask(
            interaction: discord.Interaction, prompt: app_commands.Range[str, 1, SLASH_STRING_OPTION_LIMIT]
        ) -> None:
            await handlers.ask(interaction, prompt)

        @tree.command(name="reset", description="Start this conversation afresh")
        async def reset(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "reset")

        @tree.command(name="status", description="What the assistants are doing in this conversation")
        async def status(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "status")

        @tree.command(name="assistants", description="Who is on the team and what each one does")
        async def assistants(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "assistants")

        @tree.command(name="help", description="How to talk to the assistants")
        async def help_(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "help")

        admin = app_commands.Group(
            name="admin",
            description="Operator commands (need Manage Server)",
            guild_only=True,
            default_permissions=discord.Permissions(manage_guild=True),
        )

        @admin.command(name="reset-channel", description="Reset every conversation in this channel and its threads")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def reset_channel(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "reset channel")

        @admin.command(name="reset-all", description="Reset every conversation the bot has")
        @app_commands.describe(confirm="Set to True to really reset everything")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def reset_all(interaction: discord.Interaction, confirm: bool) -> None:
            if not confirm:
                await interaction.response.send_message(RESET_ALL_UNCONFIRMED, ephemeral=True)
                return
            await handlers.run(interaction, "reset all", "reset all confirm")  # confirm:True is the confirmation

        @admin.command(name="cancel", description="Cancel the turn running in this conversation")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def cancel(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "cancel")

        @admin.command(name="audit", description="Show the recent admin actions")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def audit(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "audit")

        @admin.command(name="grant", description="Give a member more tokens for today (UTC)")
        @app_commands.describe(member="Who gets them", tokens="How many tokens on top of today's budget")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def grant(
            interaction: discord.Interaction, member: discord.User, tokens: app_commands.Range[int, 1, 10**12]
        ) -> None:
            await handlers.run(interaction, f"grant user {member.id} {tokens}")

        @admin.command(name="forget", description="Delete everything a user wrote here and the answers to it")
        @app_commands.describe(member="Whose messages to delete")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def forget(interaction: discord.Interaction, member: discord.User) -> None:
            await handlers.run(interaction, f"forget user {member.id}")

        @admin.command(name="reload", description="Re-read the team file's access lists and budgets")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def reload(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "reload")

        @admin.command(name="handoff", description="Give this conversation to another assistant (handoffs)")
        @app_commands.describe(assistant="The team member who answers from now on")
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def handoff(
            interaction: discord.Interaction, assistant: app_commands.Range[str, 1, HANDOFF_NAME_LIMIT]
        ) -> None:
            await handlers.run(interaction, f"handoff {assistant}")

        @tree.command(name="usage", description="Today's token use and budgets (admins)")
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.guild_only()
        @app_commands.checks.has_permissions(manage_guild=True)
        @app_commands.check(_require_guild)  # listed last: runs first
        async def usage(interaction: discord.Interaction) -> None:
            await handlers.run(interaction, "usage")

        for command, text in (
            (reset_channel, "reset channel"),
            (reset_all, "reset all"),
            (cancel, "cancel"),
            (audit, "audit"),
            (grant, "grant"),
            (forget, "forget"),
            (reload, "reload"),
            (handoff, "handoff"),
            (usage, "usage"),
        ):
            command.extras[ENGINE_TEXT] = text
        tree.add_command(admin)
        if isinstance(tree, SwitchboardTree):
            tree.handlers = self

    # ------------------------------------------------------------------ /ask

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await with_retries(call, self._surface.retry, what)

    async def _acknowledge(
        self, interaction: discord.Interaction, *, ephemeral: bool = False
    ) -> discord.InteractionCallbackResponse[discord.Client] | None:
        """Defer (Discord shows "is thinking..."), retrying transient failures while the 3 seconds last."""
        deadline = interaction.created_at + INTERACTION_ACK_DEADLINE
        policy = self._surface.retry
        attempt = 0
        while True:
            try:
                return await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            except CALL_ERRORS as exc:
                if attempt and isinstance(exc, discord.HTTPException) and exc.code == INTERACTION_ALREADY_ACKNOWLEDGED:
                    log.info("interaction %s was acknowledged by an earlier try", interaction.id)
                    return None
                delay = backoff_delay(attempt, policy.base, policy.cap, retry_after(exc))
                now = datetime.datetime.now(datetime.UTC)
                if not is_transient(exc) or now + datetime.timedelta(seconds=delay) >= deadline:
                    raise
                log.info("acknowledging interaction %s failed (%s); trying again", interaction.id, reason(exc))
                attempt += 1
                await asyncio.sleep(delay)

    async def ask(self, interaction: discord.Interaction, prompt: str) -> None:
        callback = await self._acknowledge(interaction)  # first: the 3-second deadline
        guild_id = interaction.guild_id
        channel = interaction.channel
        thread_inbound = await self._ask_in_thread(interaction, prompt) if self._may_thread(interaction) else None
        if thread_inbound is not None:
            inbound = thread_inbound
        else:
            original_id = callback.message_id if callback is not None else None
            if original_id is None:
                original_id = (await self._retrying(interaction.original_response, "reading the response")).id
            self._surface.register_interaction(interaction, original_id)
            channel_id = interaction.channel_id or 0
            conversation, chan = (
                keys_for(channel, guild_id)
                if channel is not None
                else (conversation_key(guild_id, channel_id), channel_key(guild_id, channel_id))
            )
            inbound = Inbound(
                platform="discord",
                event_id=str(interaction.id),
                conversation=conversation,
                channel=chan,
                user=str(interaction.user.id),
                text=prompt,
                route=Route("interaction", channel_id, original_id, guild_id, interaction.id).to_mapping(),
                **access_facts(interaction.user, guild_id is None),
            )
        try:
            await self._bot.accept(inbound)
        except ValueError as exc:  # bot.types.InvalidInbound: the text is meant for the user
            log.info("/ask %s refused: %s", interaction.id, exc)
            await self._fail(interaction, inbound, f"⚠️ {exc}" if str(exc) else ACCEPT_FAILED)
        except Exception:
            log.exception("accept failed for interaction %s", interaction.id)
            await self._fail(interaction, inbound, ACCEPT_FAILED)

    def _may_thread(self, interaction: discord.Interaction) -> bool:
        if not self._settings.ask_threads or interaction.guild_id is None:
            return False
        if not isinstance(interaction.channel, discord.TextChannel):
            return False  # already in a thread, a forum, a voice channel's chat...
        perms = interaction.app_permissions
        return perms.create_public_threads and perms.send_messages_in_threads and perms.view_channel

    async def _ask_in_thread(self, interaction: discord.Interaction, prompt: str) -> Inbound | None:
        """Open a public thread for the question, echo it at the top, and point the response at it. None: answer
        in place instead (the thread could not be opened, or the question not be put in it)."""
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        user = interaction.user
        try:
            # not retried: a retry after a lost answer would open a second thread; answering in place is fine
            thread = await channel.create_thread(
                name=_clip_line(prompt, THREAD_NAME_LIMIT),
                type=discord.ChannelType.public_thread,
                auto_archive_duration=self._settings.thread_auto_archive_minutes,  # type: ignore[arg-type]
                reason=f"/ask by {user.id}",
            )
            header = f"**{user.mention} asked:**\n"
            quoted = "\n".join("> " + line for line in prompt.splitlines() or [""])
            question = header + (
                quoted
                if len(header + quoted) <= MESSAGE_CONTENT_LIMIT
                else quoted[: MESSAGE_CONTENT_LIMIT - len(header) - 1] + "…"
            )
            anchor = await self._retrying(
                lambda: thread.send(
                    question,
                    nonce=nonce_for(f"ask-{interaction.id}", "question"),  # a retried post returns the first one
                    allowed_mentions=discord.AllowedMentions(users=[user]),  # the ping adds the user to the thread
                ),
                "putting the question into its thread",
            )
        except CALL_ERRORS as exc:
            log.info("cannot open a thread for /ask in channel %s (%s); answering in place", channel.id, reason(exc))
            return None
        try:
            await self._retrying(
                lambda: interaction.edit_original_response(
                    content=f"🧵 Answering in {thread.mention}", allowed_mentions=NO_MENTIONS
                ),
                "pointing the response at the thread",
            )
        except CALL_ERRORS as exc:
            log.warning("could not point the response of /ask %s at its thread: %s", interaction.id, reason(exc))
        guild_id = interaction.guild_id
        return Inbound(
            platform="discord",
            event_id=str(interaction.id),
            conversation=conversation_key(guild_id, thread.id),
            channel=channel_key(guild_id, channel.id),
            user=str(user.id),
            text=prompt,
            route=Route("message", thread.id, anchor.id, guild_id).to_mapping(),
            **access_facts(user, False),
        )

    async def _fail(self, interaction: discord.Interaction, inbound: Inbound, text: str) -> None:
        route = Route.parse(inbound.route)
        self._surface.forget_interaction(interaction.id)  # no turn will follow: no hand-over either
        try:
            if route.kind == "interaction":
                await interaction.edit_original_response(content=text, embed=None)
            else:
                channel = interaction.client.get_partial_messageable(route.channel_id, guild_id=route.guild_id)
                await channel.send(
                    text,
                    reference=discord.MessageReference(
                        message_id=route.anchor_id, channel_id=route.channel_id, fail_if_not_exists=False
                    ),
                )
        except discord.HTTPException as exc:
            log.info("could not report a failed /ask: %s", exc)

    # ------------------------------------------------------------------ everything else

    async def run(self, interaction: discord.Interaction, *texts: str) -> None:
        """Run engine commands in order (stopping at the first refusal) and show the last result."""
        if not interaction.response.is_done():
            await self._acknowledge(interaction, ephemeral=True)
        guild_id = interaction.guild_id
        channel_id = interaction.channel_id or 0
        conversation, chan = (
            keys_for(interaction.channel, guild_id)
            if interaction.channel is not None
            else (conversation_key(guild_id, channel_id), channel_key(guild_id, channel_id))
        )
        ctx = CommandContext(
            actor=Actor("discord", str(interaction.user.id), platform_admin=is_platform_admin(interaction)),
            channel=chan,
            conversation=conversation,
        )
        result = CommandResult(False, COMMAND_FAILED)
        for text in texts:
            try:
                result = await self._bot.command(ctx, text)
            except Exception:
                log.exception("command %r failed", text)
                result = CommandResult(False, COMMAND_FAILED)
            if not result.ok:
                break
        body = result.text.strip() or ("Done." if result.ok else COMMAND_FAILED)
        if not result.ok:
            body = "⚠️ " + body
        for chunk in MESSAGE_TEXT.split(body):
            await self._retrying(
                functools.partial(interaction.followup.send, chunk, ephemeral=True, allowed_mentions=NO_MENTIONS),
                "answering the command",
            )
