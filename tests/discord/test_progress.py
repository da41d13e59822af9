"""The thinking indicator: typing for the whole turn, one progress message paced at one edit per second, replaced
by the answer."""

from __future__ import annotations

import itertools

from adapters.discord.constants import PROGRESS_EDIT_INTERVAL, TYPING_RESEND_INTERVAL
from adapters.discord.rendering import PROGRESS_FOOTER
from bot.types import Delegated, Reply, Retrying, Started, SubFinished, TextDelta, Withdrawn
from tests.discord.conftest import StartAdapter, World

TYPING = "/channels/{channel_id}/typing"
MESSAGES = "/channels/{channel_id}/messages"
EDIT = "/channels/{channel_id}/messages/{message_id}"


async def test_typing_is_sent_for_the_whole_turn_and_stops_at_delivery(
    world: World, start_adapter: StartAdapter
) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> think hard")
    inbound = await bot.next_inbound()
    turn = bot.turn(inbound)
    await adapter.surface.progress(turn, Started())
    first = await fake.wait_for_call("POST", TYPING)
    assert first.params["channel_id"] == str(world.general) and first.status == 204
    for round_ in range(1, 4):  # re-sent every 5 s while the turn runs (Discord shows it for about 10 s)
        world.clock.advance(TYPING_RESEND_INTERVAL)
        await fake.wait_until(lambda n=round_: len(fake.find_calls("POST", TYPING)) == n + 1)
    await adapter.surface.deliver(turn, Reply("Thought."))
    typing_calls = len(fake.find_calls("POST", TYPING))
    answer = fake.bot_messages(world.general)[-1]
    assert answer["content"] == "Thought."
    assert all(c.index < fake.find_calls("POST", MESSAGES)[-1].index for c in fake.find_calls("POST", TYPING))
    assert world.clock.sleepers == 0  # the typing loop has ended...
    world.clock.advance(60)
    assert len(fake.find_calls("POST", TYPING)) == typing_calls  # ...and sends nothing more


async def test_a_withdrawn_turn_stops_typing_and_posts_nothing(world: World, start_adapter: StartAdapter) -> None:
    """The engine withdraws a turn shown as started when its message is deleted before the turn began (forget)."""
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> forget me")
    turn = bot.turn(await bot.next_inbound())
    await adapter.surface.progress(turn, Started())
    await fake.wait_for_call("POST", TYPING)
    await adapter.surface.progress(turn, Withdrawn())
    assert world.clock.sleepers == 0  # the typing loop has ended
    world.clock.advance(60)
    assert len(fake.find_calls("POST", TYPING)) == 1 and not fake.find_calls("POST", MESSAGES)


async def test_progress_message_is_edited_at_most_once_a_second(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    question = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> research this")
    inbound = await bot.next_inbound()
    turn = bot.turn(inbound)
    surface = adapter.surface

    await surface.progress(turn, Started())
    await surface.progress(turn, Delegated("research", "find three sources", "call-1"))
    created = await fake.wait_for_call("POST", MESSAGES)  # the progress message: a reply to the question
    assert created.response["embeds"][0]["footer"]["text"] == PROGRESS_FOOTER
    assert created.response["message_reference"]["message_id"] == question["id"]
    status_id = created.response["id"]

    # a burst of events inside one second: no edit yet...
    await surface.progress(turn, Delegated("maths", "check the numbers", "call-2"))
    for word in ["The ", "answer ", "is ", "coming"]:
        await surface.progress(turn, TextDelta(word))
    world.clock.advance(PROGRESS_EDIT_INTERVAL / 2)
    assert not fake.find_calls("PATCH", EDIT)
    # ...then exactly one edit carrying all of it
    world.clock.advance(PROGRESS_EDIT_INTERVAL / 2)
    edit1 = await fake.wait_for_call("PATCH", EDIT)
    description = edit1.body["embeds"][0]["description"]
    assert "research" in description and "maths" in description and "The answer is coming" in description
    assert edit1.params["message_id"] == status_id

    # a sub-assistant finishes and the proxy retries: the preview restarts
    await surface.progress(turn, SubFinished("research", "call-1", ok=True))
    await surface.progress(turn, Retrying("the provider had a hiccup", attempt=2))
    await surface.progress(turn, TextDelta("Fresh start"))
    world.clock.advance(PROGRESS_EDIT_INTERVAL)
    edit2 = await fake.wait_for_call("PATCH", EDIT, after=edit1.index + 1)
    description = edit2.body["embeds"][0]["description"]
    assert "✅ **research** finished" in description and "Retrying" in description
    assert "Fresh start" in description and "The answer is coming" not in description

    status_writes = [created, *fake.find_calls("PATCH", EDIT)]
    gaps = [b.clock_t - a.clock_t for a, b in itertools.pairwise(status_writes)]
    assert gaps and min(gaps) >= PROGRESS_EDIT_INTERVAL

    # the answer replaces the progress message: same message, text, no embed, nothing else posted
    delivered = await surface.deliver(turn, Reply("Three sources, numbers checked."))
    assert delivered == status_id
    (answer,) = fake.bot_messages(world.general)
    assert answer["id"] == status_id and answer["content"] == "Three sources, numbers checked."
    assert answer["embeds"] == []
    late = len(fake.calls)
    await surface.progress(turn, TextDelta("straggler"))  # events after delivery change nothing
    world.clock.advance(10)
    assert len(fake.calls) == late and world.clock.sleepers == 0


async def test_progress_after_a_restart_without_started_still_works(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi")
    inbound = await bot.next_inbound()
    turn = bot.turn(inbound)
    await adapter.surface.progress(turn, SubFinished("research", "c9", ok=False))  # no Started, no Delegated
    created = await fake.wait_for_call("POST", MESSAGES)
    assert "research** ran into a problem" in created.response["embeds"][0]["description"]
    await fake.wait_for_call("POST", TYPING)
    await adapter.surface.deliver(turn, Reply("Partial answer.", kind="failure"))
    (answer,) = fake.bot_messages(world.general)
    assert answer["content"] == "⚠️ Partial answer." and answer["embeds"] == []
