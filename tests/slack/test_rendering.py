"""How a turn is shown: streaming fallback and its pacing, long answers, failures, retries, rate limits."""

from __future__ import annotations

import asyncio
import itertools

from adapters.slack import constants as c
from adapters.slack.turn_view import NOT_IN_THREAD_NOTE
from bot.types import Delegated, Failed, Reply, Retrying, Started, SubFinished, TextDelta, Withdrawn
from fakes.slack_api import FakeSlack, FaultKind, statuses
from tests.slack.conftest import TEST_UPDATE_INTERVAL, AdapterFactory, HttpSender, mention
from tests.slack.fake_bot import ANSWER, FakeBot, pause, team_script


def thread_text(fake: FakeSlack, channel: str, thread_ts: str) -> str:
    return "".join(m.text for m in fake.bot_messages(channel, thread_ts))


def long_answer() -> str:
    paragraphs = []
    for i in range(60):
        paragraphs.append(f"Paragraph {i}: " + " ".join(f"word{j}" for j in range(40)))
        if i % 9 == 4:
            paragraphs.append("```python\n" + "\n".join(f"x_{k} = {k} * 2" for k in range(30)) + "\n```")
    paragraphs.append("Emoji tail: " + "🙂" * 1200)
    return "\n\n".join(paragraphs)


async def test_streaming_refused_falls_back_to_a_paced_placeholder(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    fake.refuse_streaming_in_channels = True
    words = [f"w{i} " for i in range(60)]
    answer = "".join(words)

    def script(inbound):
        items = [Started(), Delegated("researcher", "dig", "call_r")]
        for w in words:
            items += [TextDelta(w), pause(0.02)]
        items += [SubFinished("researcher", "call_r", True), Reply(answer)]
        return items

    bot.script = script
    event = mention(fake, "go")
    await http.event(event)
    [delivery] = await bot.wait_deliveries(1)

    refused = fake.calls_to("chat.startStream")
    assert refused and not refused[0].ok
    [placeholder] = fake.bot_messages("C0GENERAL", event["ts"])
    assert placeholder.ts == delivery.ts and placeholder.text == answer
    assert placeholder.metadata["event_payload"]["turn_id"] == delivery.turn.id
    updates = [u for u in fake.calls_to("chat.update") if u.args["ts"] == placeholder.ts]
    assert len(updates) >= 3, "the placeholder shows the preview as it grows"
    times = [fake.calls_to("chat.postMessage")[0].t] + [u.t for u in updates]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= TEST_UPDATE_INTERVAL * 0.9, gaps
    assert all(u.ok for u in updates)
    first_status = fake.calls_to("assistant.threads.setStatus")[0]
    assert first_status.t < fake.calls_to("chat.postMessage")[0].t
    assert statuses(fake.calls)[-1] == ""


async def test_long_answer_streamed_is_split_never_cut(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    answer = long_answer()
    bot.script = team_script(answer)
    event = mention(fake, "write a lot")
    await http.event(event)
    [delivery] = await bot.wait_deliveries(1)
    messages = fake.bot_messages("C0GENERAL", event["ts"])
    assert len(messages) > 2
    assert "".join(m.text for m in messages) == answer
    assert messages[0].ts == delivery.ts
    assert c.MESSAGE_TEXT.length(messages[0].text) <= c.STREAM_MESSAGE_MAX_CHARS
    assert all(c.MESSAGE_TEXT.length(m.text) <= c.MESSAGE_PART_MAX_CHARS for m in messages[1:])
    assert all(call.ok for call in fake.calls), fake.summary()
    parts = [m.metadata["event_payload"] for m in messages]
    assert [p["part"] for p in parts] == list(range(1, len(messages) + 1))
    assert [p["last"] for p in parts] == [False] * (len(messages) - 1) + [True]


async def test_long_answer_in_the_fallback_is_split_below_update_limits(
    fake: FakeSlack, bot: FakeBot, http: HttpSender
):
    fake.refuse_streaming_in_channels = True
    answer = long_answer()
    bot.script = team_script(answer)
    event = mention(fake, "write a lot")
    await http.event(event)
    await bot.wait_deliveries(1)
    messages = fake.bot_messages("C0GENERAL", event["ts"])
    assert "".join(m.text for m in messages) == answer
    assert all(c.MESSAGE_TEXT.length(m.text) <= c.MESSAGE_PART_MAX_CHARS for m in messages)
    # nothing was refused except the stream itself (no msg_too_long)
    assert [call.response.get("error") for call in fake.calls if not call.ok] == ["streaming_not_supported_in_channel"]


async def test_failure_is_shown_plainly_and_clears_the_status(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    text = "The researcher could not finish: the AI provider kept failing. Please try again later."
    bot.script = lambda inbound: [
        Started(),
        Delegated("researcher", "dig", "call_r"),
        SubFinished("researcher", "call_r", ok=False),
        Failed(text),
        Reply(text, kind="failure"),
    ]
    event = mention(fake, "please")
    await http.event(event)
    [delivery] = await bot.wait_deliveries(1)
    [msg] = fake.bot_messages("C0GENERAL", event["ts"])
    assert text in msg.text and msg.ts == delivery.ts
    assert ("call_r", c.TASK_ERROR) in msg.tasks
    assert statuses(fake.calls)[-1] == ""


async def test_a_withdrawn_turn_clears_its_status_and_posts_nothing(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    """The engine withdraws a turn shown as started when its message is deleted before the turn began (forget)."""
    bot.script = lambda inbound: [Started(), Withdrawn()]
    event = mention(fake, "forget me")
    await http.event(event)
    await bot.settle()
    await bot.wait_for(lambda: statuses(fake.calls) and statuses(fake.calls)[-1] == "")
    assert statuses(fake.calls)[0] != ""
    assert fake.bot_messages("C0GENERAL", event["ts"]) == [] and not bot.deliveries


async def test_failure_before_anything_was_shown(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    bot.script = lambda inbound: [Started(), Failed("Nope."), Reply("The assistant is unavailable.", kind="failure")]
    event = mention(fake, "please")
    await http.event(event)
    await bot.wait_deliveries(1)
    [msg] = fake.bot_messages("C0GENERAL", event["ts"])
    assert "The assistant is unavailable." in msg.text
    assert statuses(fake.calls)[0] != "" and statuses(fake.calls)[-1] == ""


async def test_retry_restarts_the_preview(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    bot.script = lambda inbound: [
        Started(),
        TextDelta("A first attempt that will be abandoned"),
        lambda: fake.wait_for(lambda: fake.ok_calls_to("chat.startStream")),
        Retrying("server_error", attempt=2),
        TextDelta(ANSWER[:10]),
        TextDelta(ANSWER[10:]),
        Reply(ANSWER),
    ]
    event = mention(fake, "try")
    await http.event(event)
    [delivery] = await bot.wait_deliveries(1)
    [msg] = fake.bot_messages("C0GENERAL", event["ts"])
    assert msg.text == ANSWER and msg.ts == delivery.ts
    [abandoned] = [m for m in fake.bot_messages("C0GENERAL", event["ts"], include_deleted=True) if m.deleted]
    assert abandoned.text.startswith("A first attempt")
    loading = [
        m for call in fake.calls_to("assistant.threads.setStatus") for m in call.args.get("loading_messages", [])
    ]
    assert "The AI provider had an error; trying again..." in loading  # in words, not "server_error"


async def test_reply_differing_from_the_preview_replaces_it(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    bot.script = lambda inbound: [Started(), TextDelta("Draft that the engine later rewrote"), Reply(ANSWER)]
    event = mention(fake, "x")
    await http.event(event)
    await bot.wait_deliveries(1)
    assert thread_text(fake, "C0GENERAL", event["ts"]) == ANSWER


async def test_rate_limited_calls_are_retried(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    fake.rate_limit("chat.startStream", times=1, retry_after=0)
    fake.rate_limit("chat.stopStream", times=1, retry_after=0)
    event = mention(fake, "x")
    await http.event(event)
    await bot.wait_deliveries(1)
    assert [call.status for call in fake.calls_to("chat.startStream")] == [429, 200]
    assert thread_text(fake, "C0GENERAL", event["ts"]) == ANSWER


async def test_status_is_refreshed_during_long_work_and_cleared(
    fake: FakeSlack, bot: FakeBot, make_adapter: AdapterFactory
):
    adapter = await make_adapter("http", status_refresh_seconds=0.05)
    http = HttpSender(fake, adapter)
    release = asyncio.Event()
    bot.script = lambda inbound: [
        Started(),
        Delegated("researcher", "a long dig", "call_r"),
        release,
        SubFinished("researcher", "call_r", True),
        Reply(ANSWER),
    ]
    event = mention(fake, "long job")
    await http.event(event)

    def refreshed() -> bool:
        naming = [
            call
            for call in fake.calls_to("assistant.threads.setStatus")
            if any("researcher" in m for m in call.args.get("loading_messages", []))
        ]
        return len(naming) >= 3

    await fake.wait_for(refreshed)
    release.set()
    await bot.wait_deliveries(1)
    assert statuses(fake.calls)[-1] == ""
    st = adapter.status.thread("C0GENERAL", event["ts"])
    assert not st.active and st.refresher is None


async def test_find_delivery_resumes_a_partly_posted_reply(fake: FakeSlack, bot: FakeBot, adapter):
    from adapters.slack.render import reply_metadata
    from bot.types import TurnRef

    answer = long_answer()
    root = fake.add_user_message("C0GENERAL", "U0ALICE", "question")
    turn = TurnRef(
        id="turn-crashed",
        conversation=f"slack:{fake.team_id}:C0GENERAL:{root.ts}",
        channel=f"slack:{fake.team_id}:C0GENERAL",
        platform="slack",
        route={
            "team": fake.team_id,
            "channel": "C0GENERAL",
            "user": "U0ALICE",
            "message_ts": root.ts,
            "thread_ts": root.ts,
            "place": "channel",
        },
    )
    surface = adapter.surface
    assert await surface.find_delivery(turn) is None
    # a crash after the first two parts were posted
    parts = c.MESSAGE_TEXT.split(answer)
    end = 0
    for i, part in enumerate(parts[:2]):
        end += len(part)
        await adapter.client.chat_postMessage(
            channel="C0GENERAL",
            thread_ts=root.ts,
            markdown_text=part,
            metadata=reply_metadata(turn.id, i + 1, False, end),
        )
    assert await surface.find_delivery(turn) is None
    first_ts = await surface.deliver(turn, Reply(answer))
    assert first_ts == fake.bot_messages("C0GENERAL", root.ts)[0].ts
    assert thread_text(fake, "C0GENERAL", root.ts) == answer
    assert await surface.find_delivery(turn) == first_ts


async def test_a_change_during_a_write_is_shown_without_waiting_for_the_next_event(
    fake: FakeSlack, bot: FakeBot, http: HttpSender
):
    hold = asyncio.Event()
    bot.script = lambda inbound: [
        Started(),
        Delegated("researcher", "dig", "call_r"),
        lambda: fake.wait_for(lambda: fake.calls_to("chat.startStream")),  # the first write is under way
        SubFinished("researcher", "call_r", True),
        hold,  # the proxy now thinks for a long time: nothing else happens
        Reply(ANSWER),
    ]
    event = mention(fake, "go")
    await http.event(event)
    await fake.wait_for(
        lambda: any(("call_r", c.TASK_COMPLETE) in m.tasks for m in fake.bot_messages("C0GENERAL", event["ts"]))
    )
    assert not bot.deliveries
    hold.set()
    await bot.wait_deliveries(1)


async def test_a_reply_its_thread_refuses_is_posted_in_the_channel_saying_so(
    fake: FakeSlack, bot: FakeBot, http: HttpSender
):
    bot.script = lambda inbound: [Started(), Reply(ANSWER)]
    fake.fail("chat.postMessage", FaultKind(error="cannot_reply_to_message"), channel="C0GENERAL")
    event = mention(fake, "hello")
    await http.event(event)
    [delivery] = await bot.wait_deliveries(1)
    [message] = fake.bot_messages("C0GENERAL")
    assert message.thread_ts is None and message.text == NOT_IN_THREAD_NOTE + ANSWER
    assert delivery.ts == message.ts
    assert fake.status_of("C0GENERAL", event["ts"]) == ""
