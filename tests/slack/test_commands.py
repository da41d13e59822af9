"""/switchboard and the reset shortcut: acked at once, passed to the engine, answered ephemerally."""

from __future__ import annotations

import asyncio
import json
import time

from adapters.slack import SlackAdapter
from bot.types import CommandResult, Delegated, Started
from fakes.slack_api import FakeSlack, statuses
from tests.slack.conftest import HttpSender, mention
from tests.slack.fake_bot import FakeBot


async def test_slash_command_is_acked_and_answered_ephemerally(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    bot.command_result = CommandResult(True, "*Switchboard* commands: help, status, reset, assistants")
    bot.command_gate = asyncio.Event()  # the engine is slow: the ack must not wait for it
    fields = fake.command_body(user="U0ALICE", channel="C0GENERAL", text="help")
    t0 = time.monotonic()
    status, body = await http.form(fields)
    assert status == 200 and body == ""
    assert time.monotonic() - t0 < 3.0
    await bot.wait_for(lambda: bot.commands)
    assert not fake.posts_to_response_url(fields["response_url"])
    bot.command_gate.set()
    posts = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
    assert posts == [{"text": bot.command_result.text, "response_type": "ephemeral", "replace_original": False}]
    [(ctx, text)] = bot.commands
    assert text == "help"
    assert ctx.actor.platform == "slack" and ctx.actor.user == "U0ALICE" and not ctx.actor.platform_admin
    assert ctx.channel == f"slack:{fake.team_id}:C0GENERAL"
    assert ctx.conversation is None  # slash commands cannot be used in threads
    assert not fake.calls_to("chat.postMessage")  # nothing public


async def test_admin_flag_comes_from_users_info_and_is_cached(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    for _ in range(2):
        fields = fake.command_body(user="U0ADMIN", channel="D0ADMIN", text="reset all")
        await http.form(fields)
        await fake.wait_for(lambda f=fields: fake.posts_to_response_url(f["response_url"]))
    assert [ctx.actor.platform_admin for ctx, _ in bot.commands] == [True, True]
    assert len(fake.calls_to("users.info")) == 1
    ctx = bot.commands[0][0]
    assert ctx.conversation == f"slack:{fake.team_id}:D0ADMIN:dm"


async def test_response_url_failure_falls_back_to_post_ephemeral(fake: FakeSlack, bot: FakeBot, http: HttpSender):
    fields = fake.command_body(user="U0BOB", channel="C0GENERAL", text="status")
    fields["response_url"] = fake.url + "/response/unknown"
    await http.form(fields)
    [call] = await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))
    assert call.args["user"] == "U0BOB" and call.args["channel"] == "C0GENERAL" and call.args["text"] == "ok"


async def test_in_a_channel_without_the_bot_the_fallback_answers_in_the_users_dm(
    fake: FakeSlack, bot: FakeBot, http: HttpSender
):
    fake.bot_absent.add("C0OTHER")
    fields = fake.command_body(user="U0BOB", channel="C0OTHER", text="status")
    fields["response_url"] = fake.url + "/response/unknown"
    await http.form(fields)
    [post] = await fake.wait_for(lambda: fake.calls_to("chat.postMessage"))
    [ephemeral] = fake.calls_to("chat.postEphemeral")
    assert not ephemeral.ok and ephemeral.response["error"] == "not_in_channel"
    assert post.ok and post.args["channel"] == "U0BOB" and post.args["text"] == "ok"
    assert [m.text for m in fake.messages[fake.dm_channel("U0BOB")]] == ["ok"]


async def test_reset_shortcut_resets_the_thread_and_clears_its_indicator(
    fake: FakeSlack, bot: FakeBot, adapter: SlackAdapter, http: HttpSender
):
    hold = asyncio.Event()
    bot.script = lambda inbound: [Started(), Delegated("researcher", "t", "call_r"), hold]
    event = mention(fake, "start")
    await http.event(event)
    # the turn's progress is on screen (the indicator, the stream with the delegation) before the reset
    await fake.wait_for(
        lambda: adapter.status.is_active("C0GENERAL", event["ts"]) and fake.calls_to("chat.startStream")
    )
    bot.command_result = CommandResult(True, "This conversation was reset.")
    shortcut = {
        "type": "message_action",
        "callback_id": "switchboard_reset_thread",
        "trigger_id": "t1",
        "response_url": fake.new_response_url(),
        "team": {"id": fake.team_id, "domain": "fake"},
        "channel": {"id": "C0GENERAL", "name": "general"},
        "user": {"id": "U0ALICE"},
        "message": {"type": "message", "ts": "1700000000.999000", "thread_ts": event["ts"], "text": "x"},
        "token": "legacy",
    }
    status, _ = await http.form({"payload": json.dumps(shortcut)})
    assert status == 200
    await fake.wait_for(lambda: fake.posts_to_response_url(shortcut["response_url"]))
    [(ctx, text)] = bot.commands
    assert text == "reset" and ctx.conversation == bot.inbounds[0].conversation
    assert statuses(fake.calls)[-1] == ""
    assert not adapter.status.is_active("C0GENERAL", event["ts"])
    hold.set()
