"""Events delivered as signed HTTP requests, the way Slack's Events API does."""

from __future__ import annotations

import itertools

from adapters.slack import constants as c
from bot.types import Delegated, Reply, Started, SubFinished, TextDelta
from fakes.slack_api import FakeSlack
from tests.slack.conftest import HttpSender, Outcomes, mention, message
from tests.slack.fake_bot import ANSWER, FakeBot


async def test_mention_streams_tasks_and_answers_in_the_thread(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    status, _ = await http.event(mention(fake, "summarise the report"))
    assert status == 200
    [delivery] = await bot.wait_deliveries(1)

    inbound = bot.inbounds[0]
    thread_ts = inbound.route["message_ts"]
    assert inbound.conversation == f"slack:{fake.team_id}:C0GENERAL:{thread_ts}"
    assert inbound.channel == f"slack:{fake.team_id}:C0GENERAL"
    assert inbound.text == "summarise the report"
    assert inbound.user == "U0ALICE"

    # the thinking indicator comes before anything is posted, and names the sub-assistants at work
    first_status = fake.calls_to("assistant.threads.setStatus")[0]
    first_post = fake.calls_to("chat.startStream", "chat.postMessage")[0]
    assert first_status.t < first_post.t
    assert first_status.args["thread_ts"] == thread_ts
    # issue 5 asks for the indicator within 100 ms of the accept; on loopback it takes a few ms (margin for CI)
    assert first_status.t - bot.accepted_at[0] < 0.25
    loading = [
        m for call in fake.calls_to("assistant.threads.setStatus") for m in call.args.get("loading_messages", [])
    ]
    assert any("researcher" in m for m in loading) and any("writer" in m for m in loading)

    # one stream, in the user's thread, recipients set (a channel), tasks in_progress -> complete
    [start] = fake.calls_to("chat.startStream")
    assert start.args["thread_ts"] == thread_ts
    assert start.args["recipient_user_id"] == "U0ALICE" and start.args["recipient_team_id"] == fake.team_id
    [msg] = fake.bot_messages("C0GENERAL", thread_ts)
    assert msg.ts == delivery.ts
    for sub in ("researcher", "writer"):
        seen = [s for task_id, s in msg.tasks if task_id == f"call_{sub}"]
        assert seen[0] == c.TASK_IN_PROGRESS and seen[-1] == c.TASK_COMPLETE, seen
    # the answer, in full, exactly once, found again by its metadata
    assert msg.text == ANSWER
    assert msg.metadata == {
        "event_type": c.REPLY_METADATA_EVENT_TYPE,
        "event_payload": {"turn_id": delivery.turn.id, "part": 1, "last": True, "end": len(ANSWER)},
    }
    assert not msg.streaming
    # the indicator ends cleared
    assert fake.calls_to("assistant.threads.setStatus")[-1].args["status"] == ""
    assert await bot.surface.find_delivery(delivery.turn) == delivery.ts


async def test_slack_retry_of_an_event_is_answered_once(
    fake: FakeSlack, bot: FakeBot, http: HttpSender, outcomes: Outcomes
):
    event = mention(fake, "hello")
    status, payload = await http.event(event)
    assert status == 200
    status, _ = await http.event(event, event_id=payload["event_id"], retry_num=1)
    assert status == 200
    await outcomes.wait_count(2)
    await bot.settle()
    assert len(bot.deliveries) == 1
    assert len(fake.calls_to("chat.startStream")) == 1
    assert len(fake.bot_messages("C0GENERAL")) == 1


async def test_a_mention_delivered_as_app_mention_and_message_is_answered_once(
    fake: FakeSlack, bot: FakeBot, http: HttpSender, outcomes: Outcomes
):
    event = mention(fake, "hi there")
    await http.event(event)
    as_message = {**event, "type": "message", "channel_type": "channel"}
    await http.event(as_message)  # Slack sends message.channels too, with another event id
    await http.event(event)  # and a plain duplicate delivery with a new event id
    await outcomes.wait_count(3)
    await bot.settle()
    assert len(bot.inbounds) == 1
    assert len(bot.deliveries) == 1


async def test_forged_and_stale_signatures_are_rejected_without_side_effects(
    fake: FakeSlack, bot: FakeBot, http: HttpSender
):
    import json
    import time

    body = json.dumps(fake.event_body(mention(fake, "sneaky")))
    before = len(fake.calls)
    forged = fake.sign(body, secret="not-the-secret")
    status, _ = await http.post_raw(body, {"Content-Type": "application/json", **forged})
    assert status == 401
    stale = fake.sign(body, timestamp=int(time.time()) - c.SIGNATURE_MAX_AGE_SECONDS - 60)
    status, _ = await http.post_raw(body, {"Content-Type": "application/json", **stale})
    assert status == 401
    status, _ = await http.post_raw(body, {"Content-Type": "application/json"})
    assert status == 401
    tampered = fake.sign(body)
    status, _ = await http.post_raw(
        body.replace("sneaky", "sneakier"), {"Content-Type": "application/json", **tampered}
    )
    assert status == 401
    assert bot.accept_calls == 0
    assert len(fake.calls) == before


async def test_bot_own_and_edited_messages_are_ignored(
    fake: FakeSlack, bot: FakeBot, http: HttpSender, outcomes: Outcomes
):
    start = mention(fake, "start a thread")
    await http.event(start)
    await bot.wait_deliveries(1)
    thread = start["ts"]
    ignored = [
        message(fake, "from another bot", thread_ts=thread, bot_id="B0OTHER", subtype="bot_message"),
        message(fake, "a bot without subtype", thread_ts=thread, bot_id="B0OTHER"),
        message(fake, "our own words", thread_ts=thread, user=fake.bot_user_id),
        {
            **message(fake, "x", thread_ts=thread),
            "subtype": "message_changed",
            "message": {"text": "edited", "user": fake.bot_user_id},
        },
        {**message(fake, "x", thread_ts=thread), "subtype": "message_deleted"},
        mention(fake, "   ", thread_ts=thread),
        message(fake, "top-level chatter, no mention"),
        message(fake, "a thread the bot is not in", thread_ts="1699999999.000001"),
    ]
    for event in ignored:
        await http.event(event)
    await outcomes.wait_count(1 + len(ignored))
    assert outcomes.names[1:] == ["ignored"] * len(ignored)
    assert len(bot.inbounds) == 1


async def test_replies_in_a_thread_the_bot_is_in_continue_without_mention(
    fake: FakeSlack, bot: FakeBot, http: HttpSender, outcomes: Outcomes
):
    start = mention(fake, "first question")
    await http.event(start)
    await bot.wait_deliveries(1)
    follow_up = message(fake, "and a follow-up", thread_ts=start["ts"])
    await http.event(follow_up)
    await bot.wait_deliveries(2)
    first, second = bot.inbounds
    assert second.conversation == first.conversation
    assert second.text == "and a follow-up"
    # the answer goes into the same thread
    assert bot.deliveries[1].turn.route["thread_ts"] == start["ts"]
    assert fake.message("C0GENERAL", bot.deliveries[1].ts).thread_ts == start["ts"]
    # a mention inside someone else's thread joins that thread
    other = message(fake, "a human thread root", user="U0BOB")
    reply_mention = mention(fake, "what do you think?", thread_ts=other["ts"])
    await http.event(reply_mention)
    await bot.wait_deliveries(3)
    assert bot.inbounds[2].conversation.endswith(f":{other['ts']}")


async def test_direct_messages_top_level_and_threaded(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    await http.event(message(fake, "hello in a DM", channel="D0ALICE"))
    [first] = await bot.wait_deliveries(1)
    assert bot.inbounds[0].conversation == f"slack:{fake.team_id}:D0ALICE:dm"
    # a DM's top level has no thread: the reply is a plain top-level message, no stream
    msg = fake.message("D0ALICE", first.ts)
    assert msg.thread_ts is None and msg.text == ANSWER
    assert not fake.calls_to("chat.startStream")

    threaded = message(fake, "a threaded DM", channel="D0ALICE", thread_ts="1700000000.999999")
    await http.event(threaded)
    [_, second] = await bot.wait_deliveries(2)
    assert bot.inbounds[1].conversation == f"slack:{fake.team_id}:D0ALICE:1700000000.999999"
    [start] = fake.calls_to("chat.startStream")
    assert "recipient_user_id" not in start.args  # not needed in DMs
    assert fake.message("D0ALICE", second.ts).thread_ts == "1700000000.999999"


async def test_a_message_the_engine_refuses_is_explained_to_its_author(
    fake: FakeSlack, bot: FakeBot, http: HttpSender, outcomes: Outcomes
):
    bot.refuse_with = "Your message is too long; the limit is 32,000 characters."
    event = mention(fake, "x" * 100)
    await http.event(event)
    assert await outcomes.wait_count(1) == ["refused"]
    [call] = await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))  # sent after the acknowledgement
    assert call.args["user"] == "U0ALICE" and call.args["thread_ts"] == event["ts"]
    assert call.args["text"] == bot.refuse_with
    assert not fake.calls_to("chat.postMessage", "chat.startStream", "assistant.threads.setStatus")


async def test_find_delivery_in_a_dm_top_level(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    await http.event(message(fake, "hello in a DM", channel="D0ALICE"))
    [delivery] = await bot.wait_deliveries(1)
    assert await bot.surface.find_delivery(delivery.turn) == delivery.ts
    other = bot.turn_for(bot.inbounds[0])  # a turn that never delivered
    assert await bot.surface.find_delivery(other) is None


async def test_url_verification_challenge_is_answered(fake: FakeSlack, http: HttpSender):
    import json

    body = json.dumps(
        {
            "token": "legacy",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    status, text = await http.post_raw(body, {"Content-Type": "application/json", **fake.sign(body)})
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text


async def test_writes_to_one_message_are_paced(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    from tests.slack.conftest import TEST_UPDATE_INTERVAL
    from tests.slack.fake_bot import pause

    words = [f"w{i} " for i in range(40)]

    def script(inbound):
        items = [Started(), Delegated("researcher", "dig", "call_r")]
        for w in words:
            items += [TextDelta(w), pause(0.02)]
        return [*items, SubFinished("researcher", "call_r", True), Reply("".join(words))]

    bot.script = script
    await http.event(mention(fake, "go"))
    await bot.wait_deliveries(1)
    writes = fake.calls_to("chat.startStream", "chat.appendStream", "chat.stopStream")
    assert len(writes) >= 4
    gaps = [b.t - a.t for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= TEST_UPDATE_INTERVAL * 0.9, gaps
