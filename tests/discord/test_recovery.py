"""Exactly once across crashes: `find_delivery` finds a delivered reply by turn id with a fresh process (no memory),
and a delivery cut short is completed, not repeated."""

from __future__ import annotations

import asyncio

import pytest

from adapters.discord.constants import MESSAGE_TEXT
from bot.types import Delegated, Reply, Started
from fakes.discord_server import READ_MESSAGE_HISTORY
from tests.discord.conftest import StartAdapter, World

MESSAGES = "/channels/{channel_id}/messages"
LONG = "\n\n".join(f"Part {i}. " + "detail " * 200 for i in range(4))


async def _restart(world: World, start_adapter: StartAdapter):  # type: ignore[no-untyped-def]
    """Close every running adapter and start a new one: the new surface knows nothing about earlier turns."""
    for adapter in world.adapters:
        await adapter.close()
    return await start_adapter()


async def test_find_delivery_after_a_restart(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> one")
    delivered_turn = bot.turn(await bot.next_inbound())
    await adapter.surface.progress(delivered_turn, Started())
    await adapter.surface.progress(delivered_turn, Delegated("research", "look", "c1"))
    await fake.wait_for_call("POST", MESSAGES)
    delivered = await adapter.surface.deliver(delivered_turn, Reply("The answer."))
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> two")
    pending_turn = bot.turn(await bot.next_inbound())
    await adapter.surface.progress(pending_turn, Delegated("research", "look again", "c2"))
    await fake.wait_until(lambda: len(fake.bot_messages(world.general)) == 2)  # its progress message

    adapter2, _ = await _restart(world, start_adapter)
    assert await adapter2.surface.find_delivery(delivered_turn) == delivered
    assert await adapter2.surface.find_delivery(pending_turn) is None  # progress only: not delivered
    # and deliver, if called anyway, does not post the delivered one twice
    posts = len(fake.find_calls("POST", MESSAGES))
    assert await adapter2.surface.deliver(delivered_turn, Reply("The answer.")) == delivered
    assert len(fake.find_calls("POST", MESSAGES)) == posts


async def test_half_posted_long_answer_is_completed_not_repeated(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> long one")
    turn = bot.turn(await bot.next_inbound())
    await adapter.surface.progress(turn, Delegated("writer", "draft", "c1"))
    status = await fake.wait_for_call("POST", MESSAGES)
    chunks = MESSAGE_TEXT.split(LONG)
    assert len(chunks) >= 3
    # the process dies while the second tail message is on its way
    held = fake.inject_stall("POST", f"/channels/{world.general}/messages", skip=1)
    delivery = asyncio.create_task(adapter.surface.deliver(turn, Reply(LONG)))
    path = f"/channels/{world.general}/messages"
    await fake.wait_until(lambda: sum(c.method == "POST" and c.path == path for c in fake.calls) == 3)
    delivery.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivery
    held.set()
    assert [m["content"] for m in fake.bot_messages(world.general)][1:] == [chunks[1]]

    adapter2, _ = await _restart(world, start_adapter)
    assert await adapter2.surface.find_delivery(turn) is None  # the head still shows progress
    delivered = await adapter2.surface.deliver(turn, Reply(LONG))
    assert delivered == status.response["id"]  # the progress message became the head
    assert [m["content"] for m in fake.bot_messages(world.general)] == chunks  # each part exactly once
    assert await adapter2.surface.find_delivery(turn) == delivered


async def test_nonce_deduplicates_when_history_cannot_be_read(world: World, start_adapter: StartAdapter) -> None:
    fake = world.fake
    blind = fake.add_channel(world.guild, "blind", deny_bot=READ_MESSAGE_HISTORY)
    adapter, bot = await start_adapter()
    await fake.user_message(blind, world.alice, f"<@{fake.bot_id}> hi")
    turn = bot.turn(await bot.next_inbound())
    first = await adapter.surface.deliver(turn, Reply("Hello."))

    adapter2, _ = await _restart(world, start_adapter)
    assert await adapter2.surface.find_delivery(turn) is None  # cannot look: says so in the log
    again = await adapter2.surface.deliver(turn, Reply("Hello."))
    assert again == first  # Discord returned the message created with the same nonce
    assert [m["content"] for m in fake.bot_messages(blind)] == ["Hello."]


async def test_deleted_answer_is_not_posted_again(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi")
    turn = bot.turn(await bot.next_inbound())
    first = await adapter.surface.deliver(turn, Reply("Hello."))
    fake.message(int(first))["_deleted"] = True  # a moderator removed it before the crash was recovered

    adapter2, _ = await _restart(world, start_adapter)
    assert await adapter2.surface.find_delivery(turn) is None
    await adapter2.surface.deliver(turn, Reply("Hello."))
    assert fake.bot_messages(world.general) == []


async def test_find_delivery_for_ask_answered_in_place_and_in_a_thread(
    world: World, start_adapter: StartAdapter
) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    in_place = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "a"})
    turn_a = bot.turn(await bot.next_inbound())
    await fake.slash("ask", user_id=world.alice, channel_id=world.general, options={"prompt": "b"})
    turn_b = bot.turn(await bot.next_inbound())
    assert await adapter.surface.deliver(turn_a, Reply("A.")) == str(in_place.original_id)
    delivered_b = await adapter.surface.deliver(turn_b, Reply("B."))

    adapter2, _ = await _restart(world, start_adapter)  # the interaction token is gone with the old process
    assert await adapter2.surface.find_delivery(turn_a) == str(in_place.original_id)
    assert await adapter2.surface.find_delivery(turn_b) == delivered_b
