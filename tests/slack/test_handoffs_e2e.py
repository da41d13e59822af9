"""Handoffs behind the Slack adapter: the real engine and the emulator, a team whose greeter hands a thread to the
editor; the reply carries the editor's name, the progress shows a "handed to editor" task, `/switchboard status`
lists the thread's active assistant and state, and an admin's `handoff` and `reset` change who answers next."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter
from adapters.slack import constants as c
from bot.engine import Bot
from emulator import Emulator
from fakes.slack_api import FakeSlack, statuses
from tests.engine.harness import handoff_team
from tests.slack.conftest import HttpSender


@pytest.fixture
async def engine(emu: Emulator, tmp_path: Path) -> AsyncIterator[Bot]:
    bot = Bot.from_config(handoff_team(emu.base_url, tmp_path / "switchboard.db"))
    yield bot
    await bot.stop()


def _chunks(value: object) -> list[dict[str, object]]:
    found = json.loads(value) if isinstance(value, str) else value
    return list(found) if isinstance(found, list) else []


async def _command(fake: FakeSlack, http: HttpSender, user: str, text: str) -> str:
    fields = fake.command_body(user=user, channel="C0GENERAL", text=text)
    await http.form(fields)
    [post] = await fake.wait_for(lambda: fake.posts_to_response_url(fields["response_url"]))
    return str(post["text"])


async def test_a_thread_handed_to_the_editor_is_answered_by_it_and_shown(
    fake: FakeSlack, emu: Emulator, engine: Bot, slack: SlackAdapter
):
    http = HttpSender(fake, slack)
    root = fake.add_user_message("C0GENERAL", "U0ALICE", "x")
    await http.event({"type": "app_mention", "user": "U0ALICE", "ts": root.ts, "channel": "C0GENERAL",
                      "team": fake.team_id, "text": f"<@{fake.bot_user_id}> I need the editor, page_id=42"})
    await fake.wait_for(lambda: fake.ok_calls_to("chat.stopStream") and statuses(fake.calls)[-1] == "", within=20)
    await engine.idle()

    [msg] = fake.bot_messages("C0GENERAL", root.ts)
    assert msg.text.startswith("editor: ") and "page_id=42" in msg.text
    assert ("handoff_0", c.TASK_COMPLETE) in msg.tasks
    streamed = fake.calls_to("chat.startStream") + fake.calls_to("chat.appendStream")
    chunks = [chunk for call in streamed for chunk in _chunks(call.args.get("chunks"))]
    assert any(ch.get("title") == "handed to editor" for ch in chunks), chunks
    assert len(fake.calls_to("chat.startStream")) == 1  # answered once

    status = await _command(fake, http, "U0ADMIN", "status")
    assert "active assistant: editor; state: page_id=42" in status

    # an admin gives the thread to layout: the next message in it is layout's
    [conv] = await engine.store.conversations()
    assert "only admins" in await _command(fake, http, "U0BOB", f"handoff layout {conv.key}")
    assert "layout now answers" in await _command(fake, http, "U0ADMIN", f"handoff layout {conv.key}")
    follow = fake.add_user_message("C0GENERAL", "U0ALICE", "and the margins?", thread_ts=root.ts)
    await http.event({"type": "message", "user": "U0ALICE", "ts": follow.ts, "thread_ts": root.ts,
                      "channel": "C0GENERAL", "team": fake.team_id, "text": "and the margins?"})
    await fake.wait_for(lambda: len(fake.bot_messages("C0GENERAL", root.ts)) == 2, within=10)
    assert fake.bot_messages("C0GENERAL", root.ts)[1].text.startswith("layout: ")

    # a reset returns the thread to the entry assistant with an empty state
    assert (await _command(fake, http, "U0ADMIN", "reset channel")).startswith("Reset 1 conversation")
    assert "active assistant: greeter; state: (empty)" in await _command(fake, http, "U0ADMIN", "status")
    audit = [(e.actor, e.action, e.outcome) for e in reversed(await engine.store.recent_audit())]
    assert ("U0BOB", "handoff", "refused") in audit and ("U0ADMIN", "handoff", "done") in audit
