"""`DiscordAdapter`: wires the engine (`BotLike`) to Discord.

    adapter = DiscordAdapter(bot, DiscordSettings.from_env())   # registers its Surface with bot.add_surface
    await adapter.start()      # login, command sync (setup_hook), gateway connected and READY
    ...                        # events flow: messages/commands -> bot.accept / bot.command; engine -> surface
    await adapter.close()

or `await run_discord(bot)` to run until cancelled. The surface waits for the login by itself, so the engine
may be started (and resume turns) before or after `adapter.start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord

from adapters.discord.client import SwitchboardClient, build_intents, client_class, invite_url
from adapters.discord.clock import Clock, SystemClock
from adapters.discord.commands import CommandHandlers
from adapters.discord.listeners import MessageListener
from adapters.discord.retry import RetryPolicy
from adapters.discord.settings import DiscordSettings
from adapters.discord.surface import DiscordSurface
from bot.types import BotLike

log = logging.getLogger("switchboard.discord")

READY_TIMEOUT = 60.0


class DiscordStartError(RuntimeError):
    """Discord refused to let the bot in; the text says what to fix (never contains the token)."""


class DiscordAdapter:
    def __init__(self, bot: BotLike, settings: DiscordSettings, *, clock: Clock | None = None) -> None:
        self.bot = bot
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.logged_in = asyncio.Event()
        self.client: SwitchboardClient = client_class(settings)(
            settings, on_user_message=self._on_message, logged_in=self.logged_in)
        self.messages = MessageListener(bot, self.client, message_content=settings.message_content)
        self.surface = DiscordSurface(
            self.client,
            self.clock,
            ready=self.logged_in,
            typing_max=settings.typing_max_seconds,
            retry=RetryPolicy(base=settings.retry_base_seconds),
        )
        self.commands = CommandHandlers(bot, self.surface, settings)
        self.commands.install(self.client.tree)
        self._connection: asyncio.Task[None] | None = None
        bot.add_surface(self.surface)

    async def _on_message(self, message: discord.Message) -> None:
        await self.messages.on_message(message)

    async def start(self, *, ready_within: float = READY_TIMEOUT) -> None:
        """Log in, sync commands, connect the gateway; returns once READY (raises DiscordStartError if refused)."""
        try:
            await self.client.login(self.settings.token)
        except discord.LoginFailure:
            raise DiscordStartError(
                "Discord rejected DISCORD_TOKEN: reset the bot token in the developer portal "
                "and update the environment."
            ) from None
        self._connection = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._connection}, timeout=ready_within, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            error = self._connection.exception() if self._connection in done else None
            await self.close()
            if isinstance(error, discord.PrivilegedIntentsRequired):
                raise DiscordStartError(
                    "DISCORD_MESSAGE_CONTENT=1 but the Message Content intent is not enabled for this app: enable "
                    "it under Bot > Privileged Gateway Intents, or unset DISCORD_MESSAGE_CONTENT."
                ) from None
            raise DiscordStartError(f"could not connect to the Discord gateway: {error or 'timed out'}") from None

    async def connected(self) -> bool:
        """For /healthz: logged in and the gateway session is up."""
        return self.client.is_ready() and not self.client.is_closed()

    async def run(self) -> None:
        """Start, then stay connected until cancelled or the connection ends."""
        await self.start()
        assert self._connection is not None
        try:
            await self._connection
        finally:
            await self.close()

    async def close(self) -> None:
        await self.surface.aclose()
        await self.client.close()
        if self._connection is not None:
            self._connection.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connection


async def run_discord(bot: BotLike, settings: DiscordSettings | None = None) -> None:
    """Entry point for a CLI: `await run_discord(bot)` with DISCORD_* from the environment."""
    await DiscordAdapter(bot, settings or DiscordSettings.from_env()).run()


async def check_discord(settings: DiscordSettings) -> list[str]:
    """For `switchboard doctor`: log in (REST only, no gateway) and return what is wrong, in plain words with the
    fix; an empty list means the credentials and the intent setting work. The token never appears in the text."""
    return (await inspect_discord(settings))[0]


async def inspect_discord(settings: DiscordSettings) -> tuple[list[str], str | None]:
    """`check_discord`'s problems, and the bot's invite URL when the login worked."""
    client = discord.Client(intents=build_intents(settings))
    problems: list[str] = []
    invite: str | None = None
    try:
        await client.login(settings.token)
        if client.application_id is not None:
            invite = invite_url(client.application_id)
        flags = client.application.flags if client.application is not None else None
        if settings.message_content and not (
            flags is not None and (flags.gateway_message_content or flags.gateway_message_content_limited)
        ):
            problems.append(
                "DISCORD_MESSAGE_CONTENT=1 but the Message Content intent is off for this app: enable it under "
                "Bot > Privileged Gateway Intents in the developer portal, or unset DISCORD_MESSAGE_CONTENT."
            )
    except discord.LoginFailure:
        problems.append("DISCORD_TOKEN was rejected: reset the bot token in the developer portal and update it.")
    except (discord.HTTPException, OSError) as exc:
        problems.append(f"cannot reach Discord: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
    return problems, invite
