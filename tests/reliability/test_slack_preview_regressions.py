"""Regression for a Slack adapter bug the crash soak found: a bot killed while a turn's live preview was on screen
(a chat stream, or the fallback placeholder) left that half-written message in the thread for good; after the
restart the resumed turn posted its reply beside it, so the user saw a dangling partial answer and the answer."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.keys import Route
from adapters.slack.status import StatusBoard
from adapters.slack.surface import SlackSurface
from bot.types import Reply, Started, TextDelta, TurnRef
from fakes.slack_api import FakeSlack


def surface(fake: FakeSlack) -> SlackSurface:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    return SlackSurface(client, StatusBoard(client), update_interval=0.01, post_interval=0.0,
                        bot_user_id=lambda: fake.bot_user_id)


@pytest.mark.parametrize("place", ["channel thread (stream)", "DM top level (placeholder)"])
async def test_a_preview_left_by_a_killed_process_is_removed_when_its_turn_resumes(place):
    async with FakeSlack() as fake:
        channel = "C0GENERAL" if place.startswith("channel") else "D0ALICE"
        root = fake.add_user_message(channel, "U0ALICE", "an earlier exchange")
        thread = root.ts if channel.startswith("C") else None
        # an earlier turn's reply (older than this turn's message) must stay
        kept = fake.add_user_message(channel, fake.bot_user_id, "an earlier reply", thread)
        kept.bot_id = fake.bot_id
        user_msg = fake.add_user_message(channel, "U0ALICE", "hello", thread)
        route = Route(fake.team_id, channel, "U0ALICE", user_msg.ts, thread, "channel" if thread else "dm")
        turn = TurnRef("turn_1", f"slack:{fake.team_id}:{channel}:{thread or 'dm'}", f"slack:{fake.team_id}:{channel}",
                       "slack", route.as_mapping(), ("U0ALICE",))
        preview_calls = ("chat.startStream", "chat.postMessage")

        first_life = surface(fake)
        await first_life.progress(turn, Started())
        await first_life.progress(turn, TextDelta("a partial ans"))
        await fake.wait_for(lambda: fake.ok_calls_to(*preview_calls))
        await first_life.close()  # the process dies here: the preview stays on screen

        second_life = surface(fake)  # the restart resumes the turn
        await second_life.progress(turn, Started())
        await second_life.progress(turn, TextDelta("the full answer"))
        await fake.wait_for(lambda: len(fake.ok_calls_to(*preview_calls)) == 2)
        assert await second_life.find_delivery(turn) is None
        await second_life.deliver(turn, Reply("the full answer"))

        shown = [m for m in fake.bot_messages(channel) if m.ts > user_msg.ts]
        assert [m.text for m in shown] == ["the full answer"]
        assert shown[0].metadata["event_payload"]["turn_id"] == "turn_1"
        assert not shown[0].streaming
        assert not fake.message(channel, kept.ts).deleted
        await second_life.close()
