"""The discord.py client: intents, the command tree, command sync in `setup_hook`, and event wiring."""

from __future__ import annotations

import asyncio
import logging
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
            else:
                self.synced = await self.tree.sync()
                log.info("synced %d global slash commands (they can take a while to appear)", len(self.synced))
        except discord.Forbidden as exc:
            log.error(
                "could not register slash commands (%s): invite the bot with the applications.commands scope%s",
                exc,
                " and check DISCORD_GUILD_ID" if self.settings.guild_id is not None else "",
            )
        self._logged_in.set()

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
