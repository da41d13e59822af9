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


async def test_opening_the_agent_dm_sets_suggested_prompts_the_agent_app_way(
    fake: FakeSlack, bot: FakeBot, make_adapter: AdapterFactory
):
    adapter = await connect(fake, make_adapter)
    for tab in ("home", "messages"):  # only the Messages tab (the agent's DM) is greeted
        event = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0ALICE", "tab": tab,
                 "event_ts": "1700000001.000002"}
        envelope = await fake.push_envelope("events_api", fake.event_body(event))
        await fake.wait_ack(envelope)
    [call] = await fake.wait_for(lambda: fake.calls_to("assistant.threads.setSuggestedPrompts"))
    assert call.ok and call.args["channel_id"] == "D0ALICE" and "thread_ts" not in call.args
    # the fake, like Slack, silently drops prompts set with thread_ts for an agent app: these were shown
    shown = fake.suggested_prompts["D0ALICE"]
    assert [p["title"] for p in shown] == [t for t, _ in adapter.settings.suggested_prompts]
    # the user's message in the agent DM is a DM conversation
    msg = {
        "type": "message",
        "channel_type": "im",
        "channel": "D0ALICE",
        "user": "U0ALICE",
        "text": "What can you do?",
        "ts": "1700000001.000010",
    }
    await fake.push_envelope("events_api", fake.event_body(msg))
    [delivery] = await bot.wait_deliveries(1)
    assert bot.inbounds[0].conversation.startswith(f"slack:{fake.team_id}:D0ALICE")
    assert fake.message("D0ALICE", delivery.ts) is not None


async def test_the_fake_drops_prompts_sent_with_thread_ts_to_an_agent_app_as_slack_does(fake: FakeSlack):
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    prompts = [{"title": "Hi", "message": "Hello"}]
    response = await client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.2", prompts=prompts)
    assert response["ok"] and fake.suggested_prompts == {}  # ok, and silently nothing
    fake.agent_view = False  # a legacy assistant_view app: thread_ts is how it is done
    await client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.2", prompts=prompts)
    assert fake.suggested_prompts == {("D1", "1.2"): prompts}


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
