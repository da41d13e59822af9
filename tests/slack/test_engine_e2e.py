"""The real engine (bot.engine.Bot) against the OpenAI emulator, behind the Slack adapter and the fake Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter
from adapters.slack import constants as c
from bot.engine import Bot
from emulator import Emulator, Rule, Script
from fakes.slack_api import FakeSlack, statuses
from tests.engine.harness import team
from tests.slack.conftest import HttpSender, Outcomes, settings_for


@pytest.fixture
async def engine(emu: Emulator, tmp_path: Path) -> AsyncIterator[Bot]:
    cfg = team(emu.base_url, tmp_path / "switchboard.db")
    bot = Bot.from_config(cfg)
    yield bot
    await bot.stop()


async def test_real_engine_answers_a_mention_with_sub_assistant_progress(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    emu.scripts["critic"] = Script(rules=[Rule(delay=0.2)])
    http = HttpSender(fake, slack)
    event = {
        "type": "app_mention",
        "user": "U0ALICE",
        "text": f"<@{fake.bot_user_id}> please ask the critic about my plan",
        "ts": fake.add_user_message("C0GENERAL", "U0ALICE", "x").ts,
        "channel": "C0GENERAL",
        "team": fake.team_id,
    }
    status, body = await http.event(event)
    assert status == 200
    # a Slack retry of the same event while the turn runs
    status, _ = await http.event(event, event_id=body["event_id"], retry_num=1)
    assert status == 200
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream") and statuses(fake.calls)[-1] == "", within=20)
    await engine.idle()

    [msg] = fake.bot_messages("C0GENERAL", event["ts"])
    assert "critic: done with" in msg.text
    assert msg.tasks[0][1] == c.TASK_IN_PROGRESS
    assert msg.tasks[-1][1] == c.TASK_COMPLETE
    turn_id = msg.metadata["event_payload"]["turn_id"]
    record = await engine.store.get_turn(turn_id)
    assert record.state == "delivered"
    assert fake.calls_to("assistant.threads.setStatus")[0].t < fake.calls_to("chat.startStream")[0].t
    assert len(fake.calls_to("chat.startStream")) == 1  # answered once


async def test_real_engine_commands_through_the_slash_command(fake: FakeSlack, engine: Bot, slack: SlackAdapter):
    http = HttpSender(fake, slack)
    fields = fake.command_body(user="U0BOB", channel="C0GENERAL", text="reset channel")
    status, _ = await http.form(fields)
    assert status == 200
    [post] = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
    assert post["response_type"] == "ephemeral" and "only admins" in post["text"]
    fields = fake.command_body(user="U0ADMIN", channel="C0GENERAL", text="reset channel")
    await http.form(fields)
    [post] = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
    assert post["text"].startswith("Reset 0 conversation")
    audit = [(e.actor, e.action, e.outcome) for e in reversed(await engine.store.recent_audit())]
    assert audit == [("U0BOB", "reset channel", "refused"), ("U0ADMIN", "reset channel", "done")]


async def test_admin_resets_the_channel_mid_turn_and_the_thread_starts_afresh(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30, times=1)])
    http = HttpSender(fake, slack)
    root = fake.add_user_message("C0GENERAL", "U0ALICE", "x")
    mention = {"type": "app_mention", "user": "U0ALICE", "ts": root.ts, "channel": "C0GENERAL",
               "team": fake.team_id, "text": f"<@{fake.bot_user_id}> please ask the critic about my plan"}
    await http.event(mention)
    await emu.wait_until(lambda: any(r.agent == "critic" for r in emu.responses.values()), within=10)
    outcomes = Outcomes(slack)
    follow_up = fake.add_user_message("C0GENERAL", "U0ALICE", "are you still there?", thread_ts=root.ts)
    await http.event({"type": "message", "user": "U0ALICE", "ts": follow_up.ts, "thread_ts": root.ts,
                      "channel": "C0GENERAL", "team": fake.team_id, "text": "are you still there?"})
    assert await outcomes.wait_count(1) == ["accepted"]
    assert [m.text for m in await engine.store.pending_inbound((await engine.store.conversations())[0].key)] == [
        "are you still there?"
    ]
    old_thread = (await engine.store.conversations())[0].main_thread

    fields = fake.command_body(user="U0ADMIN", channel="C0GENERAL", text="reset channel")
    await http.form(fields)
    [post] = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
    assert post["text"] == "Reset 1 conversation(s) in this channel."
    # the running sub-assistant run is cancelled at the provider (the emulator saw our cancel)
    [critic] = [r for r in emu.responses.values() if r.agent == "critic"]
    assert critic.status == "cancelled" and critic.cancelled_by == "client"
    assert any(e.method == "POST" and e.path.endswith("/cancel") for e in emu.log)
    # both the interrupted turn and the waiting message get a notice in the thread; the indicator is cleared
    await fake.wait_for(lambda: len(fake.bot_messages("C0GENERAL", root.ts)) == 2 and statuses(fake.calls)[-1] == "",
                        within=10)
    await engine.idle()
    texts = [m.text for m in fake.bot_messages("C0GENERAL", root.ts)]
    assert "stopped because U0ADMIN reset" in texts[0] and "send your message again" in texts[1]

    # a message asking the bot to reset is only a message; the next turn runs on fresh remote threads
    again = fake.add_user_message("C0GENERAL", "U0ALICE", "please /switchboard reset", thread_ts=root.ts)
    await http.event({"type": "message", "user": "U0ALICE", "ts": again.ts, "thread_ts": root.ts,
                      "channel": "C0GENERAL", "team": fake.team_id, "text": "please /switchboard reset"})
    await fake.wait_for(lambda: len(fake.bot_messages("C0GENERAL", root.ts)) == 3, within=10)
    [conv] = await engine.store.conversations()
    assert conv.generation == 1 and conv.main_thread not in (None, old_thread)
    assert fake.bot_messages("C0GENERAL", root.ts)[2].text == "You said: please /switchboard reset"


async def test_reset_shortcut_mid_turn_stops_the_turn_and_clears_the_indicator(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    import json

    emu.scripts["critic"] = Script(rules=[Rule(delay=30)])  # far longer than the test
    http = HttpSender(fake, slack)
    root = fake.add_user_message("C0GENERAL", "U0ALICE", "x")
    event = {
        "type": "app_mention",
        "user": "U0ALICE",
        "text": f"<@{fake.bot_user_id}> please ask the critic about my plan",
        "ts": root.ts,
        "channel": "C0GENERAL",
        "team": fake.team_id,
    }
    await http.event(event)
    # the critic is at work: the indicator names it and the stream shows its task in progress
    await fake.wait_for(
        lambda: any(
            "critic" in m
            for call in fake.calls_to("assistant.threads.setStatus")
            for m in call.args.get("loading_messages", [])
        ),
        within=10,
    )
    shortcut = {
        "type": "message_action",
        "callback_id": c.RESET_SHORTCUT_CALLBACK_ID,
        "trigger_id": "t1",
        "response_url": fake.new_response_url(),
        "team": {"id": fake.team_id},
        "channel": {"id": "C0GENERAL"},
        "user": {"id": "U0ALICE"},  # the person who started the conversation may reset it
        "message": {"type": "message", "ts": root.ts, "text": "x"},
    }
    await http.form({"payload": json.dumps(shortcut)})
    [post] = await fake.wait_for(lambda: fake.posts_to_response_url(shortcut["response_url"]), within=10)
    assert post["text"].startswith("Done")
    # the turn ends with a plain notice in the thread, and the indicator is cleared
    await fake.wait_for(
        lambda: (
            any("reset" in m.text for m in fake.bot_messages("C0GENERAL", root.ts)) and statuses(fake.calls)[-1] == ""
        ),
        within=10,
    )
    await engine.idle()
    assert not slack.status.is_active("C0GENERAL", root.ts)
    [notice] = fake.bot_messages("C0GENERAL", root.ts)
    assert notice.text.startswith("This turn was stopped because U0ALICE reset the conversation")
    assert notice.tasks[-1][1] == c.TASK_ERROR  # the critic never finished


async def test_after_a_restart_the_adapter_still_follows_known_threads(
    fake: FakeSlack, engine: Bot, slack: SlackAdapter
):
    http = HttpSender(fake, slack)
    root = fake.add_user_message("C0GENERAL", "U0ALICE", "x")
    event = {
        "type": "app_mention",
        "user": "U0ALICE",
        "text": f"<@{fake.bot_user_id}> hello",
        "ts": root.ts,
        "channel": "C0GENERAL",
        "team": fake.team_id,
    }
    await http.event(event)
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream"), within=10)
    await engine.idle()
    await slack.stop()

    restarted = SlackAdapter(engine, settings_for(fake, "http"))  # a fresh process: empty thread memory
    await restarted.start()
    try:
        assert len(restarted.threads) == 0
        follow = {
            "type": "message",
            "channel_type": "channel",
            "user": "U0ALICE",
            "text": "and then?",
            "ts": fake.add_user_message("C0GENERAL", "U0ALICE", "and then?", root.ts).ts,
            "thread_ts": root.ts,
            "channel": "C0GENERAL",
            "team": fake.team_id,
        }
        await HttpSender(fake, restarted).event(follow)
        await fake.wait_for(lambda: len(fake.ok_calls_to("chat.stopStream")) == 2, within=10)
        await engine.idle()
        assert len(fake.bot_messages("C0GENERAL", root.ts)) == 2
    finally:
        await restarted.stop()
