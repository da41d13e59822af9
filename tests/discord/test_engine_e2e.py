"""The real engine (bot.engine.Bot) against the OpenAI emulator, behind the Discord adapter and the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from adapters.discord import DiscordAdapter
from adapters.discord.rendering import PROGRESS_FOOTER
from bot.engine import Bot
from bot.types import Reply, TurnRef
from emulator import Emulator, Rule, Script
from tests.discord.conftest import World
from tests.engine.harness import team

MESSAGES = "/channels/{channel_id}/messages"

Engine = Callable[[], Awaitable[tuple[Bot, DiscordAdapter]]]


class ProcessKilled(BaseException):
    """Stands for the process dying at that point (nothing of ours catches it, as nothing survives a SIGKILL)."""


@pytest.fixture
async def engine(emu: Emulator, world: World, tmp_path: Path) -> AsyncIterator[Engine]:
    """Starts an engine (on one database for the whole test) with a Discord adapter; stops them all at the end."""
    bots: list[Bot] = []

    async def start() -> tuple[Bot, DiscordAdapter]:
        cfg = team(emu.base_url, tmp_path / "switchboard.db")
        bot = Bot.from_config(cfg)
        adapter = DiscordAdapter(bot, world.settings(), clock=world.clock)
        adapter.messages.observers.append(world.outcomes)
        world.adapters.append(adapter)
        await adapter.start(ready_within=10)
        await bot.start()
        bots.append(bot)
        return bot, adapter

    yield start
    for bot in bots:
        await bot.stop()


async def test_real_engine_answers_a_mention_with_sub_assistant_progress(
    world: World, emu: Emulator, engine: Engine
) -> None:
    emu.scripts["critic"] = Script(rules=[Rule(delay=0.3)])
    bot, _ = await engine()
    fake = world.fake
    question = await fake.user_message(
        world.general, world.alice, f"<@{fake.bot_id}> please ask the critic about my plan"
    )
    # the progress message names the sub-assistant at work, as a reply to the question
    status = await fake.wait_for_call("POST", MESSAGES, within=20)
    assert status.response["embeds"][0]["footer"]["text"] == PROGRESS_FOOTER
    assert "critic" in status.response["embeds"][0]["description"]
    assert status.response["message_reference"]["message_id"] == question["id"]
    await fake.wait_until(lambda: fake.find_calls("POST", "/channels/{channel_id}/typing"))

    def answered() -> list[dict]:  # type: ignore[type-arg]
        return [m for m in fake.bot_messages(world.general) if not m["embeds"] and "critic: done with" in m["content"]]

    (answer,) = await fake.wait_until(answered, within=20)
    await bot.idle()
    assert answer["id"] == status.response["id"]  # the progress message became the answer
    assert answer["content"].startswith("Here is what the team found:")
    assert len(fake.bot_messages(world.general)) == 1  # answered once, nothing else left behind
    assert await bot.store.pending_inbound(f"discord:{world.guild}:{world.general}") == []


async def test_real_engine_behind_ask_in_a_thread_and_commands(world: World, engine: Engine) -> None:
    bot, _ = await engine()
    fake = world.fake
    await fake.slash("ask", user_id=world.alice, channel_id=world.general, options={"prompt": "ask the researcher"})
    thread_call = await fake.wait_for_call("POST", "/channels/{channel_id}/threads")
    thread = int(thread_call.response["id"])
    answer = await fake.wait_until(
        lambda: [m for m in fake.bot_messages(thread) if "researcher: done with" in m["content"]], within=20
    )
    assert answer[0]["message_reference"]  # a reply to the question echoed at the top of the thread
    await bot.idle()

    # the engine parses and authorises; the adapter fills in Discord's own admin notion
    status = await fake.slash("status", user_id=world.alice, channel_id=thread)
    reset = await fake.slash("admin", subcommand="reset-channel", user_id=world.mod, channel_id=world.general)
    refused = await fake.slash("admin", subcommand="reset-channel", user_id=world.alice, channel_id=world.general)

    def shown(interaction_id: int) -> Callable[[], str | None]:
        def check() -> str | None:
            original = fake.interactions[interaction_id].original_id
            message = fake.message(original) if original else None
            return message["content"] if message and message["content"] else None

        return check

    assert await fake.wait_until(shown(status.id), within=10)
    assert (await fake.wait_until(shown(reset.id), within=10)).startswith("Reset ")
    assert await fake.wait_until(shown(refused.id), within=10) == "⚠️ Sorry, only admins can do that."
    # the refusal is audited by the engine, with who, where, what and the outcome
    [refusal] = [e for e in await bot.store.recent_audit() if e.outcome == "refused"]
    assert (refusal.platform, refusal.actor, refusal.action) == ("discord", str(world.alice), "reset channel")


async def test_real_engine_recovers_a_delivery_cut_by_a_crash_without_reposting(world: World, engine: Engine) -> None:
    bot1, adapter1 = await engine()
    fake = world.fake
    real_deliver = adapter1.surface.deliver
    delivered: list[str] = []

    async def post_then_crash(turn: TurnRef, reply: Reply) -> str:
        delivered.append(await real_deliver(turn, reply))
        # a kill, not an error: an exception would be recorded as an undeliverable reply, a kill leaves the turn
        # `delivering` for the next process
        raise ProcessKilled("process killed right after posting")

    adapter1.surface.deliver = post_then_crash  # type: ignore[method-assign]
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hello there")
    await fake.wait_until(lambda: fake.bot_messages(world.general), within=20)
    await bot1.idle()
    (turn,) = await bot1.store.unfinished_turns(f"discord:{world.guild}:{world.general}")
    assert turn.state == "delivering"
    await bot1.stop()
    await adapter1.close()

    posts = len(fake.find_calls("POST", MESSAGES))
    bot2, _ = await engine()  # a new process: same database, fresh adapter with no memory
    await bot2.idle()
    record = await bot2.store.get_turn(turn.id)
    assert record is not None and record.state == "delivered" and record.delivered_ref == delivered[0]
    assert len(fake.find_calls("POST", MESSAGES)) == posts  # found by find_delivery, not posted again
    assert [m["content"] for m in fake.bot_messages(world.general)] == ["You said: hello there"]


async def test_admin_reset_mid_turn_cancels_the_runs_and_the_channel_starts_afresh(
    world: World, emu: Emulator, engine: Engine
) -> None:
    emu.scripts["critic"] = Script(rules=[Rule(delay=30, times=1)])
    bot, _ = await engine()
    fake = world.fake
    conversation = f"discord:{world.guild}:{world.general}"
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> please ask the critic about my plan")
    await emu.wait_until(lambda: any(r.agent == "critic" for r in emu.responses.values()), within=10)
    waiting = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hello?")
    assert await world.outcomes.of(waiting["id"], within=10) == "accepted"
    old_thread = (await bot.store.get_conversation(conversation)).main_thread

    reset = await fake.slash("admin", subcommand="reset-channel", user_id=world.mod, channel_id=world.general)

    def reset_answer() -> str | None:
        original = fake.interactions[reset.id].original_id
        message = fake.message(original) if original else None
        return message["content"] if message and message["content"] else None

    assert (await fake.wait_until(reset_answer, within=10)) == "Reset 1 conversation(s) in this channel."
    [critic] = [r for r in emu.responses.values() if r.agent == "critic"]
    assert critic.status == "cancelled" and critic.cancelled_by == "client"

    def notices() -> list[str]:
        return [m["content"] for m in fake.bot_messages(world.general) if "reset" in m["content"]]

    found = await fake.wait_until(lambda: len(notices()) == 2 and notices(), within=10)
    assert "stopped because" in found[0] and "send your message again" in found[1]
    await bot.idle()
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> ask the critic again")
    await fake.wait_until(
        lambda: [m for m in fake.bot_messages(world.general) if "critic: done with" in m["content"]], within=20
    )
    conv = await bot.store.get_conversation(conversation)
    assert conv.generation == 1 and conv.main_thread not in (None, old_thread)
    [done] = [e for e in await bot.store.recent_audit() if e.action == "reset channel"]
    assert (done.actor, done.outcome) == (str(world.mod), "done")


async def test_a_delivery_that_fails_unexpectedly_is_recorded_not_left_delivering(
    world: World, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    bot, adapter = await engine()
    fake = world.fake

    async def broken(turn: TurnRef, reply: Reply) -> str:
        raise RuntimeError("a bug in the surface")

    adapter.surface.deliver = broken  # type: ignore[method-assign]
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hello there")
    conversation = f"discord:{world.guild}:{world.general}"
    await world.outcomes.of((await fake.wait_until(lambda: fake.channel_messages(world.general)))[-1]["id"])
    await bot.idle()
    assert await bot.store.unfinished_turns(conversation) == []  # not stuck in `delivering`
    [entry] = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert entry.exc_info is not None and "a bug in the surface" in str(entry.exc_info[1])
    turn_id = entry.getMessage().split()[1].rstrip(":")
    record = await bot.store.get_turn(turn_id)
    assert record is not None and record.state == "delivered"
    assert record.delivered_ref == "undeliverable:error:RuntimeError"
    assert bot.metrics.undeliverable.labels("discord")._value.get() == 1
    assert await bot.store.pending_inbound(conversation) == []
