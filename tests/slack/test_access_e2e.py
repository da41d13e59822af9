"""Access, limits and safe output on Slack: the real engine and emulator behind the Slack adapter, talking to the fake
Slack through slack_sdk / slack_bolt. A refused message gets one ephemeral explanation and starts no run; a model's
answer that tries to ping the channel, everyone or a user group is posted with those mentions defused."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter
from bot.config import Budgets, PlatformConfig
from bot.engine import Bot
from emulator import Emulator, Rule, Script, run_emulator
from fakes.slack_api import FakeSlack, statuses
from tests.engine.harness import team
from tests.engine.test_forget import tables_containing
from tests.slack.conftest import HttpSender, settings_for

PINGS = ("<!channel>", "<!here>", "<!everyone>", "<!subteam^S0ENG|@eng>", "<!subteam^S0OPS>", "@here")
PINGING_ANSWER = ("Heads up <!channel> and <!here|here>! Also <!everyone>, <!subteam^S0ENG|@eng>, "
                  "<!subteam^S0OPS> @here.")
J = "@\u2060"  # a defused mention


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(retry_after=0.01, token_delay=0.005) as emulator:
        yield emulator


@pytest.fixture
async def engine(emu: Emulator, tmp_path: Path) -> AsyncIterator[Bot]:
    cfg = dataclasses.replace(
        team(emu.base_url, tmp_path / "switchboard.db"),
        platforms={"slack": PlatformConfig(enabled=True, admins=("U0BOSS",), blocked_users=("U0MALLORY",))},
        budgets=Budgets(user_messages_per_minute=1),
    )
    bot = Bot.from_config(cfg)
    yield bot
    await bot.stop()


def mention(fake: FakeSlack, user: str, text: str) -> dict[str, object]:
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{fake.bot_user_id}> {text}",
        "ts": fake.add_user_message("C0GENERAL", user, "x").ts,
        "channel": "C0GENERAL",
        "team": fake.team_id,
    }


async def test_a_blocked_user_gets_one_ephemeral_explanation_and_no_run(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    http = HttpSender(fake, slack)
    event = mention(fake, "U0MALLORY", "answer me")
    status, body = await http.event(event)
    assert status == 200
    await http.event(event, event_id=body["event_id"], retry_num=1)  # Slack's retry of the same event
    [note] = await fake.wait_for(lambda: fake.ok_calls_to("chat.postEphemeral"))
    await engine.idle()
    assert note.args["user"] == "U0MALLORY" and note.args["text"].startswith("Sorry, you don't have access")
    assert not fake.calls_to("chat.postMessage", "chat.startStream", "assistant.threads.setStatus")
    assert not emu.log
    assert len(fake.calls_to("chat.postEphemeral")) == 1  # the retry got nothing more
    [entry] = await engine.store.recent_audit()
    assert (entry.actor, entry.outcome, entry.detail) == ("U0MALLORY", "refused", "blocked_user")


async def test_over_the_rate_limit_a_user_is_told_which_limit_and_when_it_resets(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    http = HttpSender(fake, slack)
    await http.event(mention(fake, "U0ALICE", "first"))
    await http.event(mention(fake, "U0ALICE", "second"))
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream") and fake.ok_calls_to("chat.postEphemeral"),
                        within=20)
    await engine.idle()
    [note] = fake.ok_calls_to("chat.postEphemeral")
    assert note.args["user"] == "U0ALICE"
    assert "1 message a minute for you; the limit resets at" in note.args["text"]
    assert len([r for r in emu.responses.values() if r.agent == "proxy"]) == 1


async def test_model_answers_cannot_ping_the_channel_everyone_or_a_user_group(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    emu.scripts["proxy"] = Script(rules=[Rule(reply=PINGING_ANSWER)])
    http = HttpSender(fake, slack)
    event = mention(fake, "U0ALICE", "say something loud")
    await http.event(event)
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream") and statuses(fake.calls)[-1] == "", within=20)
    await engine.idle()
    [msg] = fake.bot_messages("C0GENERAL", str(event["ts"]))
    assert f"Heads up {J}channel and {J}here! Also {J}everyone, {J}eng, {J}group {J}here." in msg.text
    # nothing that went to Slack (streamed previews, task details, the final text) carried a mention
    sent = json.dumps([c.args for c in fake.calls], ensure_ascii=False)
    for ping in PINGS:
        assert ping not in sent.replace(J, "")
    assert "<!" not in sent


async def test_admins_see_usage_and_forget_a_user_with_the_slash_command(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    http = HttpSender(fake, slack)
    await http.event(mention(fake, "U0ALICE", "remember kiwi-secret-5150"))
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream"), within=20)
    await engine.idle()

    async def command(user: str, text: str) -> str:
        fields = fake.command_body(user=user, channel="C0GENERAL", text=text)
        status, _ = await http.form(fields)
        assert status == 200
        [post] = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
        assert post["response_type"] == "ephemeral"
        return str(post["text"])

    assert "only admins" in await command("U0ALICE", "usage")
    usage = await command("U0BOSS", "usage")
    assert usage.startswith("Usage on ") and "user:slack:U0ALICE:" in usage
    forgot = await command("U0BOSS", "forget user U0ALICE")
    assert forgot.startswith("Forgot user:slack:U0ALICE: 1 messages, 1 turns")
    assert tables_containing(Path(engine.team.db_path), "kiwi-secret-5150") == {}
    actions = [(e.actor, e.action, e.outcome) for e in await engine.store.recent_audit(3)]
    assert actions == [("U0BOSS", "forget", "done"), ("U0BOSS", "usage", "done"), ("U0ALICE", "usage", "refused")]


@pytest.fixture
async def grouped(fake: FakeSlack, emu: Emulator, tmp_path: Path) -> AsyncIterator[tuple[Bot, SlackAdapter]]:
    """A bot whose Slack lists allow only the user group S0STAFF and block S0BANNED (even for its staff)."""
    fake.add_usergroup("S0STAFF", "staff", ["U0ALICE", "U0BOB"])
    fake.add_usergroup("S0BANNED", "banned", ["U0BOB"])
    fake.add_usergroup("S0OLD", "old", ["U0CAROL"], disabled=True)
    access = PlatformConfig(enabled=True, allowed_roles=("S0STAFF",), blocked_roles=("S0BANNED",))
    bot = Bot.from_config(dataclasses.replace(team(emu.base_url, tmp_path / "db"), platforms={"slack": access}))
    adapter = SlackAdapter(bot, settings_for(fake, "http"))
    await bot.start()
    await adapter.start()
    yield bot, adapter
    await adapter.stop()
    await bot.stop()


async def test_slack_user_groups_are_the_roles_of_the_access_lists(
    fake: FakeSlack, emu: Emulator, grouped: tuple[Bot, SlackAdapter]
):
    bot, adapter = grouped
    http = HttpSender(fake, adapter)
    [read] = fake.ok_calls_to("usergroups.list")  # once, at start
    assert read.args["include_users"] in ("1", "true", True)
    for user in ("U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"):
        await http.event(mention(fake, user, f"hello from {user}"))
    notes = "chat.postEphemeral"
    await fake.wait_for(lambda: len(fake.ok_calls_to(notes)) == 3 and fake.ok_calls_to("chat.stopStream"), within=20)
    await bot.idle()
    refused = sorted(c.args["user"] for c in fake.ok_calls_to("chat.postEphemeral"))
    assert refused == ["U0BOB", "U0CAROL", "U0DAVE"]  # banned; only in a disabled group; in no group
    details = sorted((e.actor, e.detail) for e in await bot.store.recent_audit())
    assert details == [("U0BOB", "blocked_role"), ("U0CAROL", "user_not_allowed"), ("U0DAVE", "user_not_allowed")]
    assert [r.agent for r in emu.responses.values()] == ["proxy"]  # alice's turn only


async def test_a_free_plan_workspace_has_no_groups_and_still_works(fake: FakeSlack, emu: Emulator, tmp_path: Path):
    fake.usergroups = None
    bot = Bot.from_config(team(emu.base_url, tmp_path / "db"))
    adapter = SlackAdapter(bot, settings_for(fake, "http"))
    await bot.start()
    await adapter.start()
    try:
        assert not fake.ok_calls_to("usergroups.list") and fake.calls_to("usergroups.list")
        await HttpSender(fake, adapter).event(mention(fake, "U0ALICE", "hello"))
        await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream"), within=20)
        assert len(fake.calls_to("usergroups.list")) == 1  # not asked again: it cannot change
    finally:
        await adapter.stop()
        await bot.stop()
