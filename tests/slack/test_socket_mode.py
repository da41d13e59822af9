"""Events and commands delivered as Socket Mode envelopes over the fake's websocket."""

from __future__ import annotations

import asyncio

from adapters.slack import SlackAdapter
from bot.types import CommandResult
from fakes.slack_api import FakeSlack
from tests.slack.conftest import AdapterFactory, mention
from tests.slack.fake_bot import ANSWER, FakeBot


async def connect(fake: FakeSlack, make_adapter: AdapterFactory) -> SlackAdapter:
    adapter = await make_adapter("socket")
    await fake.wait_connected()
    [opened] = fake.calls_to("apps.connections.open")
    assert opened.token == fake.app_token  # the app-level token, not the bot token
    return adapter


async def test_event_envelope_is_acked_and_answered_once_despite_a_retry(
    fake: FakeSlack, bot: FakeBot, make_adapter: AdapterFactory
):
    await connect(fake, make_adapter)
    body = fake.event_body(mention(fake, "over the socket"))
    first = await fake.push_envelope("events_api", body)
    ack = await fake.wait_ack(first)
    assert ack["envelope_id"] == first
    [delivery] = await bot.wait_deliveries(1)
    # Slack did not see the ack in time and retries the same event (same event_id, retry_attempt 1)
    retry = await fake.push_envelope("events_api", body, retry_attempt=1, retry_reason="timeout")
    await fake.wait_ack(retry)
    await bot.settle()
    assert len(bot.deliveries) == 1
    assert bot.inbounds[0].event_id == body["event_id"]
    [msg] = fake.bot_messages("C0GENERAL", body["event"]["ts"])
    assert msg.text == ANSWER and msg.ts == delivery.ts
    first_status = fake.calls_to("assistant.threads.setStatus")[0]
    assert first_status.t < fake.calls_to("chat.startStream")[0].t


async def test_slash_command_envelope_is_acked_then_answered(
    fake: FakeSlack, bot: FakeBot, make_adapter: AdapterFactory
):
    await connect(fake, make_adapter)
    bot.command_result = CommandResult(False, "Only admins can reset a channel.")
    bot.command_gate = asyncio.Event()  # the engine takes its time
    payload = fake.command_body(user="U0BOB", channel="C0GENERAL", text="reset channel")
    envelope = await fake.push_envelope("slash_commands", payload)
    await fake.wait_ack(envelope)  # acked while the engine is still working
    assert not fake.posts_to_response_url(payload["response_url"])
    bot.command_gate.set()
    posts = await fake.wait_for(lambda: fake.posts_to_response_url(payload["response_url"]))
    assert posts[0]["text"] == "Only admins can reset a channel." and posts[0]["response_type"] == "ephemeral"
    assert bot.commands[0][1] == "reset channel"


async def test_assistant_thread_started_sets_suggested_prompts(
    fake: FakeSlack, bot: FakeBot, make_adapter: AdapterFactory
):
    adapter = await connect(fake, make_adapter)
    event = {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": "U0ALICE",
            "channel_id": "D0ALICE",
            "thread_ts": "1700000001.000001",
            "context": {},
        },
        "event_ts": "1700000001.000002",
    }
    envelope = await fake.push_envelope("events_api", fake.event_body(event))
    await fake.wait_ack(envelope)
    [call] = await fake.wait_for(lambda: fake.calls_to("assistant.threads.setSuggestedPrompts"))
    assert call.ok and call.args["channel_id"] == "D0ALICE" and call.args["thread_ts"] == "1700000001.000001"
    assert [p["title"] for p in call.args["prompts"]] == [t for t, _ in adapter.settings.suggested_prompts]
    # the user's message in the assistant thread is a DM-thread conversation
    msg = {
        "type": "message",
        "channel_type": "im",
        "channel": "D0ALICE",
        "user": "U0ALICE",
        "text": "What can you do?",
        "ts": "1700000001.000010",
        "thread_ts": "1700000001.000001",
    }
    await fake.push_envelope("events_api", fake.event_body(msg))
    [delivery] = await bot.wait_deliveries(1)
    assert bot.inbounds[0].conversation == f"slack:{fake.team_id}:D0ALICE:1700000001.000001"
    assert fake.message("D0ALICE", delivery.ts).thread_ts == "1700000001.000001"


async def test_wrong_tokens_fail_fast_with_a_clear_error(fake: FakeSlack, bot: FakeBot):
    import pytest

    from adapters.slack import SettingsError
    from tests.slack.conftest import settings_for

    adapter = SlackAdapter(bot, settings_for(fake, "socket", app_token="xapp-1-wrong"))
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN"):
        await adapter.start()
    await adapter.stop()
    adapter = SlackAdapter(bot, settings_for(fake, "http", bot_token="xoxb-wrong"))
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN"):
        await adapter.start()
    await adapter.stop()
