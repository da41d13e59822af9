"""Regressions for Slack adapter bugs the crash soak found (benchmarks/crash_soak.py, docs/RELIABILITY.md).

Bolt acknowledges an Events API event before its listener runs (process_before_response=False): Slack then
forgets the event, and a bot killed before `Bot.accept` stored the message lost it for good (with every later
message of that thread, which the bot then did not know). An event must be acknowledged only once it is stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from adapters.slack import SlackAdapter
from bot.engine import Bot, make_backend
from emulator import run_emulator
from fakes.configs import slack_settings, soak_team
from fakes.slack_api import FakeSlack
from storage.base import InboxMessage
from storage.sqlite import SQLiteStore


class OrderedStore(SQLiteStore):
    def __init__(self, path: str, order: list[str]) -> None:
        super().__init__(path)
        self.order = order

    async def admit_inbound(self, message: InboxMessage, quotas: Mapping[str, int], minute: int) -> str:
        outcome = await super().admit_inbound(message, quotas, minute)  # what `Bot.accept` stores a message with
        self.order.append(f"stored {message.event_id}")
        return outcome


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[FakeSlack, Bot, list[str]]]:
    order: list[str] = []
    async with run_emulator(retry_after=0.01) as emu, FakeSlack() as fake:
        cfg = soak_team(emu.base_url, str(tmp_path / "db"))
        bot = Bot(cfg, OrderedStore(cfg.db_path, order), make_backend(cfg))
        await bot.start()
        try:
            yield fake, bot, order
        finally:
            await bot.idle()
            await bot.stop()


def acks_in(adapter: SlackAdapter, order: list[str]) -> None:
    """Record the moment bolt produces the acknowledgement (the HTTP response / the envelope ack)."""
    dispatch = adapter.app.async_dispatch

    async def recording(request):  # type: ignore[no-untyped-def]
        response = await dispatch(request)
        body = request.body if isinstance(request.body, dict) else {}
        order.append(f"acked {body.get('event_id')}")
        return response

    adapter.app.async_dispatch = recording  # type: ignore[method-assign]


def mention_event(fake: FakeSlack) -> dict:
    msg = fake.add_user_message("C0GENERAL", "U0ALICE", f"<@{fake.bot_user_id}> hello")
    return {"type": "app_mention", "user": "U0ALICE", "text": msg.text, "ts": msg.ts, "channel": "C0GENERAL",
            "team": fake.team_id}


async def test_an_http_event_is_acknowledged_only_after_it_is_stored(world):
    fake, bot, order = world
    adapter = SlackAdapter(bot, slack_settings(fake, "http"))
    acks_in(adapter, order)
    await adapter.start()
    try:
        body = fake.event_body(mention_event(fake), event_id="EvHTTP1")
        raw = json.dumps(body)
        url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
        async with aiohttp.ClientSession() as session, session.post(
            url, data=raw, headers={"Content-Type": "application/json", **fake.sign(raw)}
        ) as response:
            assert response.status == 200
        assert order[:2] == ["stored EvHTTP1", "acked EvHTTP1"]
    finally:
        await bot.idle()
        await adapter.stop()


async def test_a_socket_mode_envelope_is_acknowledged_only_after_it_is_stored(world):
    fake, bot, order = world
    adapter = SlackAdapter(bot, slack_settings(fake, "socket"))
    acks_in(adapter, order)
    await adapter.start()
    try:
        await fake.wait_connected()
        envelope = await fake.push_envelope("events_api", fake.event_body(mention_event(fake), event_id="EvSOCK1"))
        await fake.wait_ack(envelope)
        assert order[:2] == ["stored EvSOCK1", "acked EvSOCK1"]
    finally:
        await bot.idle()
        await adapter.stop()
