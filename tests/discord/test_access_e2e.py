"""Access lists on Discord: the real engine and emulator behind the Discord adapter and the fake Discord (discord.py
over HTTP and the gateway). Roles come from the member, DMs can be switched off, members with Manage Server are
admins and always allowed; a refused message gets one short reply and starts no run."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from adapters.discord import DiscordAdapter
from bot.config import PlatformConfig
from bot.engine import Bot
from emulator import Emulator
from tests.discord.conftest import World
from tests.engine.harness import team


@pytest.fixture
async def engine(emu: Emulator, world: World, tmp_path: Path) -> AsyncIterator[Bot]:
    trolls = world.fake.add_role(world.guild, "Trolls", 0)
    world.troll = world.fake.add_member(world.guild, "troll", roles=(trolls,))  # type: ignore[attr-defined]
    access = PlatformConfig(enabled=True, blocked_roles=(str(trolls),), allowed_channels=(str(world.general),),
                            dms=False)
    cfg = dataclasses.replace(team(emu.base_url, tmp_path / "switchboard.db"), platforms={"discord": access})
    bot = Bot.from_config(cfg)
    adapter = DiscordAdapter(bot, world.settings(), clock=world.clock)
    adapter.messages.observers.append(world.outcomes)
    world.adapters.append(adapter)
    await adapter.start(ready_within=10)
    await bot.start()
    yield bot
    await bot.stop()


async def outcomes(world: World, *messages: dict[str, object]) -> list[str]:
    return [await world.outcomes.of(m["id"], within=20) for m in messages]


async def test_refused_roles_channels_and_dms_get_a_reply_and_no_run(world: World, emu: Emulator, engine: Bot):
    fake = world.fake
    other = fake.add_channel(world.guild, "random")
    sent = [
        await fake.user_message(world.general, world.troll, f"<@{fake.bot_id}> hello"),  # type: ignore[attr-defined]
        await fake.user_message(other, world.alice, f"<@{fake.bot_id}> hello from random"),
        await fake.user_message(fake.dm_channel(world.alice), world.alice, "hello in a DM"),
    ]
    assert await outcomes(world, *sent) == ["refused", "refused", "refused"]
    await engine.idle()
    assert not emu.log
    replies = [m["content"] for c in (world.general, other, fake.dm_channel(world.alice)) for m in fake.bot_messages(c)]
    assert replies == [
        "⚠️ Sorry, you don't have access to this assistant team here; an admin can add you.",
        "⚠️ Sorry, I'm not enabled in this channel; ask an admin, or try a channel where I am.",
        "⚠️ Sorry, I don't take direct messages here; please mention me in a channel instead.",
    ]
    details = sorted(e.detail for e in await engine.store.recent_audit())
    assert details == ["blocked_role", "channel_not_allowed", "dms_off"]


async def test_members_allowed_and_moderators_anywhere_are_answered(world: World, emu: Emulator, engine: Bot):
    fake = world.fake
    other = fake.add_channel(world.guild, "random")
    sent = [
        await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi there"),
        await fake.user_message(other, world.mod, f"<@{fake.bot_id}> moderator here"),  # Manage Server: an admin
    ]
    assert await outcomes(world, *sent) == ["accepted", "accepted"]

    def answers() -> list[str]:
        return sorted(m["content"] for c in (world.general, other) for m in fake.bot_messages(c)
                      if m["content"].startswith("You said:"))

    await fake.wait_until(lambda: len(answers()) == 2, within=20)
    assert answers() == ["You said: hi there", "You said: moderator here"]


async def test_usage_is_for_moderators(world: World, emu: Emulator, engine: Bot):
    fake = world.fake
    sent = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> count my tokens")
    assert await outcomes(world, sent) == ["accepted"]
    await fake.wait_until(lambda: any(m["content"].startswith("You said:") for m in fake.bot_messages(world.general)),
                          within=20)
    await engine.idle()
    usage = await fake.slash("usage", user_id=world.mod, channel_id=world.general)
    refused = await fake.slash("usage", user_id=world.alice, channel_id=world.general)

    def shown(interaction_id: int) -> Callable[[], str | None]:
        def check() -> str | None:
            original = fake.interactions[interaction_id].original_id
            message = fake.message(original) if original else None
            return message["content"] if message and message["content"] else None

        return check

    text = await fake.wait_until(shown(usage.id), within=10)
    assert text.startswith("Usage on ") and f"user:discord:{world.alice}:" in text
    assert await fake.wait_until(shown(refused.id), within=10) == "⚠️ Sorry, only admins can do that."
