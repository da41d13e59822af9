"""Fixtures: a fake Discord on loopback with one guild, and a factory starting the real adapter against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from adapters.discord import DiscordAdapter, DiscordSettings
from fakes.discord_server import CREATE_PUBLIC_THREADS, MANAGE_GUILD, FakeDiscord
from tests.discord.fakes import FakeBot, FakeClock, Outcomes


@dataclass
class World:
    fake: FakeDiscord
    clock: FakeClock
    guild: int
    general: int  # the bot may open threads here
    no_threads: int  # the bot may post but not open threads
    alice: int  # a plain member
    mod: int  # a member whose role has Manage Server
    owner: int
    adapters: list[DiscordAdapter] = field(default_factory=list)
    outcomes: Outcomes = field(default_factory=Outcomes)  # what became of each user message, for all adapters

    def settings(self, **changes: object) -> DiscordSettings:
        base = DiscordSettings(token=self.fake.token, guild_id=self.guild, guild_ready_timeout=0.05)
        return replace(base, **changes)  # type: ignore[arg-type]


StartAdapter = Callable[..., Awaitable[tuple[DiscordAdapter, FakeBot]]]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    fake = await FakeDiscord(clock=clock).start()
    guild = fake.add_guild("Switchboard Test")
    general = fake.add_channel(guild, "general")
    no_threads = fake.add_channel(guild, "no-threads", deny_bot=CREATE_PUBLIC_THREADS)
    alice = fake.add_member(guild, "alice")
    moderators = fake.add_role(guild, "Moderators", MANAGE_GUILD)
    mod = fake.add_member(guild, "mod", roles=(moderators,))
    w = World(fake, clock, guild, general, no_threads, alice, mod, fake.guilds[guild].owner_id)
    with fake.patched():
        try:
            yield w
        finally:
            for adapter in w.adapters:
                await adapter.close()
            await fake.close()


@pytest.fixture
def start_adapter(world: World) -> StartAdapter:
    async def start(bot: FakeBot | None = None, **settings: object) -> tuple[DiscordAdapter, FakeBot]:
        bot = bot or FakeBot()
        adapter = DiscordAdapter(bot, world.settings(**settings), clock=world.clock)
        adapter.messages.observers.append(world.outcomes)
        world.adapters.append(adapter)
        await adapter.start(ready_within=10)
        return adapter, bot

    return start
