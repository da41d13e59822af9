"""The discord.py client: intents, the command tree, command sync in `setup_hook`, and event wiring."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import discord

from adapters.discord.commands import SwitchboardTree
from adapters.discord.settings import DiscordSettings

log = logging.getLogger("switchboard.discord.client")


def build_intents(settings: DiscordSettings) -> discord.Intents:
    """The least the adapter needs: guilds (channel and thread cache), guild and DM messages; Message Content only
    when the operator enabled it in the developer portal (it is privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.message_content
    return intents


#: OAuth2 scopes of the invite: the bot user, and its slash commands
INVITE_SCOPES = ("bot", "applications.commands")


def invite_permissions() -> discord.Permissions:
    """Exactly what the adapter uses: read and answer in channels and threads (replies reference the user's message,
    which needs the history), progress as embeds, and a thread per `/ask` in a channel."""
    return discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                               create_public_threads=True, embed_links=True, read_message_history=True)


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=invite_permissions(), scopes=INVITE_SCOPES)


class SwitchboardClient(discord.Client):
    def __init__(
        self,
        settings: DiscordSettings,
        *,
        on_user_message: Callable[[discord.Message], Awaitable[None]],
        logged_in: asyncio.Event,
    ) -> None:
        shards = settings.client_options() if isinstance(self, discord.AutoShardedClient) else {}
        super().__init__(
            intents=build_intents(settings),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=settings.guild_ready_timeout,
            **shards,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.tree = SwitchboardTree(self)
        self._on_user_message = on_user_message
        self._logged_in = logged_in
        self.synced: list[discord.app_commands.AppCommand] = []

    async def setup_hook(self) -> None:
        """Runs once after login, before the gateway connects (unlike `on_ready`, which can fire again)."""
        try:
            if self.settings.guild_id is not None:
                guild = discord.Object(self.settings.guild_id)
                self.tree.copy_global_to(guild=guild)
                self.synced = await self.tree.sync(guild=guild)
                log.info("synced %d slash commands to guild %s", len(self.synced), self.settings.guild_id)
                await self._drop_global_commands()
            else:
                self.synced = await self.tree.sync()
                log.info("synced %d global slash commands (they can take a while to appear)", len(self.synced))
        except discord.Forbidden as exc:
            log.error(
                "could not register slash commands (%s): invite the bot with the applications.commands scope%s",
                exc,
                " and check DISCORD_GUILD_ID" if self.settings.guild_id is not None else "",
            )
        if self.application_id is not None:
            print(f"Discord: add the bot to a server with {invite_url(self.application_id)}", file=sys.stderr,
                  flush=True)
        self._logged_in.set()

    async def _drop_global_commands(self) -> None:
        """Commands synced globally before (by a run without DISCORD_GUILD_ID) would show twice in this guild, once
        global and once guild-scoped: remove them. Only when there are any (one GET otherwise)."""
        if not await self.tree.fetch_commands():
            return
        global_commands = self.tree.get_commands()
        self.tree.clear_commands(guild=None)
        try:
            await self.tree.sync()
            log.info("removed the global slash commands: this bot now syncs to guild %s", self.settings.guild_id)
        finally:
            for command in global_commands:  # the local tree keeps them, for a later global sync
                self.tree.add_command(command)

    async def on_message(self, message: discord.Message) -> None:
        await self._on_user_message(message)

    async def on_ready(self) -> None:
        user = self.user
        log.info("connected to Discord as %s (%s) in %d servers", user, user.id if user else "?", len(self.guilds))


class ShardedSwitchboardClient(SwitchboardClient, discord.AutoShardedClient):
    """The same client on the gateway shards `settings.shard_ids` of `settings.shard_count`: with several instances
    each connects its own shards, since Discord sends a guild's events to one shard only and a shard must be
    connected exactly once (discord.com/developers/docs/topics/gateway#sharding)."""


def client_class(settings: DiscordSettings) -> type[SwitchboardClient]:
    return ShardedSwitchboardClient if settings.shard_count is not None else SwitchboardClient
