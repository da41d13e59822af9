"""`/ask`: deferred before anything slow, a thread where the bot may, the answer in place otherwise, and the
15-minute interaction token never outlived."""

from __future__ import annotations

from adapters.discord.rendering import PROGRESS_FOOTER
from adapters.discord.routing import Route
from bot.types import Delegated, Reply, Started, SubFinished, TextDelta
from fakes.discord_server import FLAG_LOADING
from tests.discord.conftest import StartAdapter, World

CALLBACK = "/interactions/{interaction_id}/{token}/callback"
ORIGINAL = "/webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "/webhooks/{application_id}/{token}"
MESSAGES = "/channels/{channel_id}/messages"


async def test_ask_is_deferred_first_and_opens_a_thread(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter(message_content=True)
    fake = world.fake
    mark = fake.mark()
    interaction = await fake.slash(
        "ask", user_id=world.alice, channel_id=world.general, options={"prompt": "Plan a trip"}
    )
    inbound = await bot.next_inbound()

    calls = fake.calls[mark:]
    assert calls[0].route == "POST " + CALLBACK and calls[0].status == 200  # acknowledged before anything else
    assert calls[0].body == {"type": 5}  # "is thinking...", public
    (thread_call,) = fake.find_calls("POST", "/channels/{channel_id}/threads", after=mark)
    assert thread_call.body["type"] == 11 and thread_call.body["name"] == "Plan a trip"
    thread = int(thread_call.response["id"])

    assert inbound.event_id == str(interaction.id) and inbound.text == "Plan a trip"
    assert inbound.conversation == f"discord:{world.guild}:{thread}"
    assert inbound.channel == f"discord:{world.guild}:{world.general}"
    original = fake.message(interaction.original_id or 0)
    assert original["content"] == f"🧵 Answering in <#{thread}>" and not original["flags"] & FLAG_LOADING
    (question,) = fake.bot_messages(thread)
    assert question["content"].startswith(f"**<@{world.alice}> asked:**") and "> Plan a trip" in question["content"]

    await bot.surface.progress(bot.turn(inbound), Started())
    await fake.wait_for_call("POST", "/channels/{channel_id}/typing", path=f"/channels/{thread}/typing")
    await bot.run_turn(inbound, "Day 1: Lisbon.")
    answer = fake.bot_messages(thread)[-1]
    assert answer["content"] == "Day 1: Lisbon." and answer["message_reference"]["message_id"] == question["id"]

    # a follow-up in the thread needs no command (with the message-content intent)
    follow_up = await fake.user_message(thread, world.alice, "and day 2?")
    inbound2 = await bot.next_inbound()
    assert inbound2.event_id == follow_up["id"] and inbound2.conversation == inbound.conversation


async def test_ask_answers_in_place_where_no_thread_may_be_opened(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "Why?"})
    inbound = await bot.next_inbound()
    assert not fake.find_calls("POST", "/channels/{channel_id}/threads")
    route = Route.parse(inbound.route)
    assert route.kind == "interaction" and route.anchor_id == interaction.original_id
    assert inbound.conversation == f"discord:{world.guild}:{world.no_threads}"

    turn = bot.turn(inbound)
    mark = fake.mark()
    await adapter.surface.progress(turn, Started())
    await adapter.surface.progress(turn, Delegated("research", "find sources", "c1"))
    edit = await fake.wait_for_call("PATCH", ORIGINAL, after=mark)
    assert edit.params["message_id"] == "@original"
    assert edit.body["embeds"][0]["footer"]["text"] == PROGRESS_FOOTER
    assert "research" in edit.body["embeds"][0]["description"]
    delivered = await adapter.surface.deliver(turn, Reply("Because."))

    assert delivered == str(interaction.original_id)
    original = fake.message(interaction.original_id or 0)
    assert original["content"] == "Because." and original["embeds"] == []
    assert fake.bot_messages(world.no_threads) == [original]  # nothing else posted
    assert not fake.find_calls("POST", "/channels/{channel_id}/typing")  # "is thinking..." is the indicator


async def test_long_answer_in_place_uses_followups_and_writes_the_head_last(
    world: World, start_adapter: StartAdapter
) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "Long"})
    inbound = await bot.next_inbound()
    answer = "\n\n".join(f"Paragraph {i}: " + "words " * 150 for i in range(6))
    mark = fake.mark()
    await bot.run_turn(inbound, answer)  # no progress at all: the response is still "thinking"

    writes = [c for c in fake.calls[mark:] if c.route.split(" ", 1)[1] in (ORIGINAL, FOLLOWUP)]
    # settle "thinking" first (a followup would replace it), then the tail as followups, the head last
    assert writes[0].route == "PATCH " + ORIGINAL and writes[0].body["embeds"][0]["title"] == "Posting the answer…"
    assert all(c.route == "POST " + FOLLOWUP for c in writes[1:-1]) and len(writes) >= 4
    assert writes[-1].route == "PATCH " + ORIGINAL and writes[-1].body["embeds"] == []
    posted = fake.bot_messages(world.no_threads)
    assert posted[0]["id"] == str(interaction.original_id)
    assert "".join(m["content"] for m in posted) == answer  # nothing lost, nothing repeated
    assert all(len(m["content"]) <= 2000 for m in posted)


async def test_interaction_older_than_15_minutes_falls_back_to_a_channel_message(
    world: World, start_adapter: StartAdapter
) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "Slow"})
    inbound = await bot.next_inbound()
    turn = bot.turn(inbound)
    await adapter.surface.progress(turn, Started())
    world.clock.advance(16 * 60)  # the turn took 16 minutes: the token is dead
    mark = fake.mark()
    delivered = await bot.run_turn(inbound, "Finally, the answer.")

    webhook_writes = [c for c in fake.calls[mark:] if "/webhooks/" in c.path and c.status < 300]
    assert webhook_writes == []  # never answered through the dead token
    answer = fake.message(int(delivered))
    assert answer["content"] == "Finally, the answer." and not answer.get("webhook_id")
    assert answer["message_reference"]["message_id"] == str(interaction.original_id)  # tied to the question
    assert answer["channel_id"] == str(world.no_threads)


async def test_long_turn_hands_over_to_the_channel_before_the_token_dies(
    world: World, start_adapter: StartAdapter
) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "Slow"})
    inbound = await bot.next_inbound()
    turn = bot.turn(inbound)
    await adapter.surface.progress(turn, Started())
    await adapter.surface.progress(turn, Delegated("research", "dig", "c1"))
    await fake.wait_for_call("PATCH", ORIGINAL)

    mark = fake.mark()
    world.clock.advance(14 * 60 + 1)  # one minute before the end: the watchdog settles the response
    handover = await fake.wait_for_call("PATCH", ORIGINAL, after=mark)
    assert handover.status == 200 and handover.body["embeds"][0]["title"] == "Still working…"
    # progress continues in a channel message replying to the response, with typing
    status = await fake.wait_for_call("POST", MESSAGES, after=mark)
    assert str(status.body["message_reference"]["message_id"]) == str(interaction.original_id)
    await fake.wait_for_call("POST", "/channels/{channel_id}/typing", after=mark)
    await adapter.surface.progress(turn, SubFinished("research", "c1", ok=True))
    await adapter.surface.progress(turn, TextDelta("Almost"))
    world.clock.advance(2 * 60)
    delivered = await adapter.surface.deliver(turn, Reply("Done after 16 minutes."))

    assert delivered == status.response["id"]  # the status message became the answer
    answer = fake.message(int(delivered))
    assert answer["content"] == "Done after 16 minutes." and answer["embeds"] == []
    original = fake.message(interaction.original_id or 0)
    assert original["embeds"][0]["title"] == "Still working…"  # never "The application did not respond"
    assert not [c for c in fake.calls[handover.index + 1 :] if "/webhooks/" in c.path]


async def test_late_interaction_is_not_accepted(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    await fake.slash("ask", user_id=world.alice, channel_id=world.general, options={"prompt": "late"}, age=4.0)
    callback = await fake.wait_for_call("POST", CALLBACK)
    assert callback.status == 404 and callback.response["code"] == 10062  # Unknown interaction
    assert bot.inbound == []


async def test_ask_in_a_dm_answers_in_place(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter(guild_id=None)  # global commands also work in DMs
    fake = world.fake
    dm = fake.dm_channel(world.alice)
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=dm, options={"prompt": "private question"})
    inbound = await bot.next_inbound()
    assert inbound.conversation == f"discord:dm:{dm}" and inbound.channel == f"discord:dm:{dm}"
    assert await bot.run_turn(inbound, "Private answer.") == str(interaction.original_id)
    assert fake.message(interaction.original_id or 0)["content"] == "Private answer."


async def test_refused_ask_says_why_in_place(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    bot.accept_error = ValueError("Your message is 40,000 characters long; the limit is 32,000.")
    interaction = await fake.slash("ask", user_id=world.alice, channel_id=world.no_threads, options={"prompt": "x"})
    await bot.wait_until(lambda: bot.accept_calls)
    shown = await fake.wait_until(lambda: fake.message(interaction.original_id or 0)["content"])
    assert shown.startswith("⚠️ Your message is 40,000 characters long")
    assert world.clock.sleepers == 0  # no expiry watchdog left to overwrite the refusal later
