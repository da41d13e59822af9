"""Handoffs behind the Discord adapter: the real engine and the emulator, a team whose greeter hands the channel's
conversation to the editor; the progress message says "handed to editor", the answer carries the editor's name,
`/status` shows the active assistant and state, and `/admin handoff` (Manage Server) changes who answers next."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from adapters.discord import DiscordAdapter
from bot.engine import Bot
from emulator import Emulator, Rule, Script
from tests.discord.conftest import World
from tests.engine.harness import handoff_team

MESSAGES = "/channels/{channel_id}/messages"


@pytest.fixture
async def bot(emu: Emulator, world: World, tmp_path: Path) -> AsyncIterator[Bot]:
    engine = Bot.from_config(handoff_team(emu.base_url, tmp_path / "switchboard.db"))
    adapter = DiscordAdapter(engine, world.settings(), clock=world.clock)
    adapter.messages.observers.append(world.outcomes)
    world.adapters.append(adapter)
    await adapter.start(ready_within=10)
    await engine.start()
    yield engine
    await engine.stop()


async def test_the_channel_handed_to_the_editor_is_answered_by_it_and_shown(
    world: World, emu: Emulator, bot: Bot
) -> None:
    emu.scripts["editor"] = Script(rules=[Rule(delay=0.3, times=1)])  # long enough for the progress message
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> the editor please, page_id=42")
    progress = await fake.wait_for_call("POST", MESSAGES, within=20)
    assert "handed to **editor**" in progress.response["embeds"][0]["description"]

    def answered() -> list[dict]:  # type: ignore[type-arg]
        return [m for m in fake.bot_messages(world.general) if not m["embeds"] and m["content"].startswith("editor: ")]

    (answer,) = await fake.wait_until(answered, within=20)
    await bot.idle()
    assert "page_id=42" in answer["content"]
    assert len(fake.bot_messages(world.general)) == 1  # answered once

    def shown(interaction_id: int) -> Callable[[], str | None]:
        def check() -> str | None:
            original = fake.interactions[interaction_id].original_id
            message = fake.message(original) if original else None
            return message["content"] if message and message["content"] else None

        return check

    status = await fake.slash("status", user_id=world.alice, channel_id=world.general)
    assert "active assistant: editor; state: page_id=42" in await fake.wait_until(shown(status.id), within=10)
    refused = await fake.slash("admin", subcommand="handoff", user_id=world.alice, channel_id=world.general,
                               options={"assistant": "layout"})
    assert await fake.wait_until(shown(refused.id), within=10) == "⚠️ Sorry, only admins can do that."
    done = await fake.slash("admin", subcommand="handoff", user_id=world.mod, channel_id=world.general,
                            options={"assistant": "layout"})
    assert await fake.wait_until(shown(done.id), within=10) == "layout now answers in this conversation (was editor)."
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> and the margins?")
    await fake.wait_until(
        lambda: [m for m in fake.bot_messages(world.general) if m["content"].startswith("layout: ")], within=20)
    audit = [(e.actor, e.action, e.outcome) for e in await bot.store.recent_audit()]
    assert (str(world.mod), "handoff", "done") in audit
