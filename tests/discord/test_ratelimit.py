"""A 429 from Discord is honoured by discord.py: the request is retried after `retry_after`, once."""

from __future__ import annotations

from bot.types import Reply
from tests.discord.conftest import StartAdapter, World

MESSAGES = "/channels/{channel_id}/messages"


async def test_429_is_retried_after_the_delay(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hello")
    inbound = await bot.next_inbound()
    fake.inject_429("POST", f"/channels/{world.general}/messages", retry_after=0.3)
    delivered = await adapter.surface.deliver(bot.turn(inbound), Reply("Hello after a pause."))

    limited, retried = fake.find_calls("POST", MESSAGES)
    assert limited.status == 429 and limited.response["retry_after"] == 0.3
    assert retried.status == 200 and retried.response["id"] == delivered
    assert retried.t - limited.t >= 0.3  # waited as told (real time: the library sleeps)
    assert limited.body["nonce"] == retried.body["nonce"] and retried.body["enforce_nonce"] is True
    assert [m["content"] for m in fake.bot_messages(world.general)] == ["Hello after a pause."]


async def test_global_429_on_an_interaction_followup(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    await fake.slash("status", user_id=world.alice, channel_id=world.general)
    fake.inject_429("POST", r"/webhooks/\d+/[^/]+", retry_after=0.2, is_global=True)
    followup = await fake.wait_for_call("POST", "/webhooks/{application_id}/{token}", status=200)
    limited = fake.find_calls("POST", "/webhooks/{application_id}/{token}")[0]
    assert limited.status == 429 and followup.t - limited.t >= 0.2
    assert bot.commands[0][1] == "status"
