"""Mentions, replies, threads and DMs become conversations; everything else is ignored."""

from __future__ import annotations

from tests.discord.conftest import StartAdapter, World


async def test_mention_answered_in_the_same_channel(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    sent = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> what is the capital of France?")
    inbound = await bot.next_inbound()
    assert inbound.event_id == sent["id"]
    assert inbound.text == "what is the capital of France?"
    assert inbound.conversation == f"discord:{world.guild}:{world.general}"
    assert inbound.channel == f"discord:{world.guild}:{world.general}"
    assert inbound.user == str(world.alice) and inbound.platform == "discord"
    delivered = await bot.run_turn(inbound, "Paris.")
    (answer,) = fake.bot_messages(world.general)
    assert answer["id"] == delivered and answer["content"] == "Paris."
    assert answer["message_reference"]["message_id"] == sent["id"]  # a reply to the question
    assert answer["mentions"] == []  # nobody pinged by the answer itself


async def test_mention_in_a_thread_is_answered_in_that_thread(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    thread = await fake.add_thread(world.general, "planning", owner_id=world.alice)
    sent = await fake.user_message(thread, world.alice, f"<@{fake.bot_id}> summarise please")
    inbound = await bot.next_inbound()
    assert inbound.conversation == f"discord:{world.guild}:{thread}"
    assert inbound.channel == f"discord:{world.guild}:{world.general}"  # a thread belongs to its channel
    await bot.run_turn(inbound, "Summary.")
    (answer,) = fake.bot_messages(thread)
    assert answer["content"] == "Summary." and answer["message_reference"]["message_id"] == sent["id"]
    assert fake.bot_messages(world.general) == []


async def test_plain_messages_in_channels_and_foreign_threads_are_ignored(
    world: World, start_adapter: StartAdapter
) -> None:
    _, bot = await start_adapter(message_content=True)
    fake = world.fake
    plain = await fake.user_message(world.general, world.alice, "just chatting")
    thread = await fake.add_thread(world.general, "not ours", owner_id=world.alice)
    in_thread = await fake.user_message(thread, world.alice, "chatting in a thread")
    everyone = await fake.user_message(world.general, world.alice, "@everyone hello")
    for message in (plain, in_thread, everyone):
        assert await world.outcomes.of(message["id"]) == "ignored:not-for-us"
    assert bot.inbound == [] and fake.bot_messages(world.general) == []


async def test_bots_and_our_own_messages_are_ignored(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    other_bot = int(fake.add_user("OtherBot", bot=True)["id"])
    fake.guilds[world.guild].members[other_bot] = []
    from_bot = await fake.user_message(world.general, other_bot, f"<@{fake.bot_id}> I am a bot")
    assert await world.outcomes.of(from_bot["id"]) == "ignored:bot"
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi")
    inbound = await bot.next_inbound()
    ours = await bot.run_turn(inbound, f"Hello <@{fake.bot_id}>")  # our own message, even mentioning us
    assert await world.outcomes.of(ours) == "ignored:self"
    assert [i.event_id for i in bot.inbound] == [inbound.event_id]


async def test_reply_to_the_bot_continues_the_conversation(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()  # no message-content intent: the reply's ping makes it readable
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> first")
    answer_id = int(await bot.run_turn(await bot.next_inbound(), "First answer."))
    sent = await fake.user_message(world.general, world.alice, "and then?", reply_to=answer_id)
    inbound = await bot.next_inbound()
    assert inbound.event_id == sent["id"] and inbound.text == "and then?"
    assert inbound.conversation == f"discord:{world.guild}:{world.general}"


async def test_reply_without_ping_needs_the_message_content_intent(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> first")
    answer_id = int(await bot.run_turn(await bot.next_inbound(), "First answer."))
    sent = await fake.user_message(world.general, world.alice, "unreadable", reply_to=answer_id, ping_reply=False)
    # Discord hid the text from us: the user is told how to be heard, and nothing reaches the engine
    hint = await fake.wait_until(
        lambda: [
            m
            for m in fake.bot_messages(world.general)
            if m.get("message_reference", {}).get("message_id") == sent["id"]
        ]
    )
    assert "keep the @ ping on" in hint[0]["content"]
    assert await world.outcomes.of(sent["id"]) == "hint" and len(bot.inbound) == 1


async def test_dm_is_a_conversation(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    dm = fake.dm_channel(world.alice)
    sent = await fake.user_message(dm, world.alice, "hello in private")
    inbound = await bot.next_inbound()
    assert inbound.event_id == sent["id"] and inbound.text == "hello in private"
    assert inbound.conversation == f"discord:dm:{dm}" and inbound.channel == f"discord:dm:{dm}"
    await bot.run_turn(inbound, "Hi!")
    assert [m["content"] for m in fake.bot_messages(dm)] == ["Hi!"]


async def test_follow_ups_in_a_thread_we_own_need_the_intent(world: World, start_adapter: StartAdapter) -> None:
    fake = world.fake
    _, bot = await start_adapter()
    owned = await fake.add_thread(world.general, "ours", owner_id=fake.bot_id)
    sent = await fake.user_message(owned, world.alice, "no mention here")
    # content hidden without the intent: ignored, and no hint in a thread we own
    assert await world.outcomes.of(sent["id"]) == "ignored:unreadable"
    assert fake.bot_messages(owned) == [] and bot.inbound == []


async def test_follow_ups_in_a_thread_we_own_with_the_intent(world: World, start_adapter: StartAdapter) -> None:
    fake = world.fake
    _, bot = await start_adapter(message_content=True)
    owned = await fake.add_thread(world.general, "ours", owner_id=fake.bot_id)
    sent = await fake.user_message(owned, world.alice, "no mention here")
    inbound = await bot.next_inbound()
    assert inbound.event_id == sent["id"] and inbound.conversation == f"discord:{world.guild}:{owned}"


async def test_redelivered_event_is_a_duplicate(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    sent = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> once")
    await bot.next_inbound()
    await fake.dispatch("MESSAGE_CREATE", fake._public(fake.message(int(sent["id"]))))  # a gateway replay
    await bot.wait_until(lambda: bot.accept_calls == 2)
    assert len(bot.inbound) == 1 and world.outcomes.seen[sent["id"]] in ("accepted", "duplicate")


async def test_failed_accept_is_told_in_plain_words(world: World, start_adapter: StartAdapter) -> None:
    _, bot = await start_adapter()
    fake = world.fake
    bot.accept_error = ValueError("That message is too long for me (32,000 characters at most).")
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> hi")
    await fake.wait_until(lambda: fake.bot_messages(world.general))
    (told,) = fake.bot_messages(world.general)
    assert "too long" in told["content"]
    bot.accept_error = RuntimeError("database is locked")
    await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> again")
    await fake.wait_until(lambda: len(fake.bot_messages(world.general)) == 2)
    assert "try again" in fake.bot_messages(world.general)[1]["content"]
    assert "database" not in fake.bot_messages(world.general)[1]["content"]


async def test_thread_unknown_to_the_cache_is_looked_up(world: World, start_adapter: StartAdapter) -> None:
    """After a restart, an old thread of ours may not be in discord.py's cache: the adapter fetches it once."""
    _, bot = await start_adapter(message_content=True)
    fake = world.fake
    owned = await fake.add_thread(world.general, "from last week", owner_id=fake.bot_id, announce=False)
    sent = await fake.user_message(owned, world.alice, "still there?")
    inbound = await bot.next_inbound()
    assert inbound.event_id == sent["id"] and inbound.conversation == f"discord:{world.guild}:{owned}"
    assert fake.find_calls("GET", "/channels/{channel_id}", path=f"/channels/{owned}")
    again = await fake.user_message(owned, world.alice, "hello?")
    await bot.next_inbound()
    assert await world.outcomes.of(again["id"]) == "accepted"
    assert len(fake.find_calls("GET", "/channels/{channel_id}")) == 1  # remembered
