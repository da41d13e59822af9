"""Delivering a reply recorded before this start: turns found in `replied` / `delivering` when the bot starts.

1. A turn of a platform that has no surface in this process (a Slack turn while `switchboard chat` runs the console
   on the same database) waits for that surface quietly and does not keep the bot busy; adding the surface delivers
   it. (It used to spin: thousands of warnings a second at full CPU, and `Bot.idle()` never returned.)
2. A surface whose `find_delivery` fails does not strand the turn in `delivering`: the lookup is retried, and when it
   keeps failing the reply is posted anyway (a possible duplicate is better than silence).

No provider is involved: these turns already have their reply, so the backend is never called.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from bot.delivery import FIND_DELIVERY_ATTEMPTS
from bot.engine import Bot, make_backend
from bot.types import Reply, TurnRef
from storage.base import InboxMessage, TurnRecord, TurnState
from storage.sqlite import SQLiteStore
from tests.engine.harness import WAIT_SECONDS, RecordingSurface, team

UNUSED_PROVIDER_URL = "http://127.0.0.1:9/v1"  # nothing listens here: these turns never reach the provider
SLACK_CONVERSATION = "slack:C1:1700000000.000100"
CONSOLE_CONVERSATION = "console:test:c1"
REPLY = "The answer, recorded before the restart."


class SlackSurface(RecordingSurface):
    platform = "slack"


class FailingLookupSurface(RecordingSurface):
    """`find_delivery` raises for its first `failures` calls (the platform API is down), then looks as usual."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.lookups = 0

    async def find_delivery(self, turn: TurnRef) -> str | None:
        self.lookups += 1
        if self.lookups <= self.failures:
            raise ConnectionError("the platform's API is unreachable")
        return await super().find_delivery(turn)


async def recorded_turn(db: Path, conversation: str, platform: str, state: TurnState) -> TurnRecord:
    """What a stopped bot left behind: one message, and its turn with the reply recorded in `state`."""
    store = SQLiteStore(str(db))
    await store.open()
    try:
        message = InboxMessage(f"evt-{platform}", conversation, platform, conversation.rpartition(":")[0], "u1",
                               "a question", {"channel": "C1"}, time.time())
        await store.add_inbound(message)
        turn = TurnRecord.new(conversation, 0, state=state, reply_kind="answer", reply_text=REPLY)
        await store.create_turn(turn, claim=[message.event_id])
    finally:
        await store.close()
    return turn


def bot_on(db: Path) -> Bot:
    cfg = team(UNUSED_PROVIDER_URL, db)
    return Bot(cfg, SQLiteStore(cfg.db_path), make_backend(cfg))


async def settled(bot: Bot) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        await bot.idle()


def lines_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("state", ["replied", "delivering"])
async def test_a_turn_whose_platform_has_no_surface_waits_quietly_and_is_delivered_once_the_surface_is_added(
    tmp_path, caplog, state
):
    caplog.set_level(logging.INFO, logger="switchboard")
    turn = await recorded_turn(tmp_path / "db", SLACK_CONVERSATION, "slack", state)
    bot = bot_on(tmp_path / "db")
    console = RecordingSurface()
    bot.add_surface(console)
    async with bot.running():
        await settled(bot)  # used to never return: the worker retried the turn in a loop
        bot.resume_later(SLACK_CONVERSATION)  # what an admin action does; the turn still has nowhere to go
        await settled(bot)
        assert len(lines_with(caplog, "waits for a slack surface")) == 1
        assert (await bot.store.get_turn(turn.id)).state == state

        slack = SlackSurface()
        bot.add_surface(slack)
        [(ref, reply)] = await slack.wait_for(1)
        await settled(bot)

        record = await bot.store.get_turn(turn.id)
    assert (ref.id, reply) == (turn.id, Reply(REPLY, "answer"))
    assert (record.state, record.delivered_ref) == ("delivered", "msg-1")
    assert len(slack.deliveries) == 1 and console.deliveries == []
    assert len(lines_with(caplog, "waits for a slack surface")) == 1


async def test_a_find_delivery_that_fails_is_retried_and_a_reply_it_then_finds_is_not_posted_again(tmp_path):
    turn = await recorded_turn(tmp_path / "db", CONSOLE_CONVERSATION, "console", "delivering")
    surface = FailingLookupSurface(failures=FIND_DELIVERY_ATTEMPTS - 1)
    # the reply did reach the platform before the crash
    surface.deliveries.append((TurnRef(turn.id, CONSOLE_CONVERSATION, "console:test", "console", {}), Reply(REPLY)))
    bot = bot_on(tmp_path / "db")
    bot.add_surface(surface)
    async with bot.running():
        await settled(bot)
        record = await bot.store.get_turn(turn.id)
    assert (record.state, record.delivered_ref) == ("delivered", "msg-1")
    assert len(surface.deliveries) == 1  # not posted a second time
    assert surface.lookups == FIND_DELIVERY_ATTEMPTS


async def test_a_find_delivery_that_keeps_failing_posts_the_reply_rather_than_leaving_it_delivering(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="switchboard")
    turn = await recorded_turn(tmp_path / "db", CONSOLE_CONVERSATION, "console", "delivering")
    surface = FailingLookupSurface(failures=FIND_DELIVERY_ATTEMPTS)
    bot = bot_on(tmp_path / "db")
    bot.add_surface(surface)
    async with bot.running():
        await settled(bot)
        record = await bot.store.get_turn(turn.id)
    assert (record.state, record.delivered_ref) == ("delivered", "msg-1")
    assert [(ref.id, reply) for ref, reply in surface.deliveries] == [(turn.id, Reply(REPLY, "answer"))]
    assert surface.lookups == FIND_DELIVERY_ATTEMPTS
    [warning] = lines_with(caplog, "may be a duplicate")
    assert turn.id in warning
