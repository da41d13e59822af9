"""Fixtures for the Slack adapter's end-to-end tests: a fake Slack, a fake engine, a running adapter."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from adapters.slack import SlackAdapter, SlackSettings
from bot.engine import Bot
from fakes.slack_api import FakeSlack
from tests.slack.fake_bot import FakeBot

os.environ.setdefault("SKIP_SLACK_SDK_WARNING", "1")

#: intervals small enough that tests never wait long, large enough that pacing is measurable
TEST_UPDATE_INTERVAL = 0.2
TEST_POST_INTERVAL = 0.01

AdapterFactory = Callable[..., Awaitable[SlackAdapter]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_user("U0ALICE")
        server.add_user("U0BOB")
        server.add_user("U0ADMIN", is_admin=True)
        yield server


@pytest.fixture
def bot() -> FakeBot:
    return FakeBot()


def settings_for(fake: FakeSlack, mode: str = "http", **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "bot_token": fake.bot_token,
        "mode": mode,
        "app_token": fake.app_token,
        "signing_secret": fake.signing_secret,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "base_url": fake.api_url,
        "update_interval_seconds": TEST_UPDATE_INTERVAL,
        "post_interval_seconds": TEST_POST_INTERVAL,
    }
    values.update(overrides)
    return SlackSettings(**values)


@pytest.fixture
async def slack(fake: FakeSlack, engine: Bot) -> AsyncIterator[SlackAdapter]:
    """The real adapter in HTTP mode in front of the module's real `engine` fixture."""
    adapter = SlackAdapter(engine, settings_for(fake, "http"))
    await engine.start()
    await adapter.start()
    yield adapter
    await adapter.stop()


@pytest.fixture
async def make_adapter(fake: FakeSlack, bot: FakeBot) -> AsyncIterator[AdapterFactory]:
    started: list[SlackAdapter] = []

    async def factory(mode: str = "http", engine: Any = None, **overrides: Any) -> SlackAdapter:
        adapter = SlackAdapter(engine or bot, settings_for(fake, mode, **overrides))
        await adapter.start()
        started.append(adapter)
        return adapter

    yield factory
    await bot.settle()
    for adapter in started:
        await adapter.stop()


@pytest.fixture
async def adapter(make_adapter: AdapterFactory) -> SlackAdapter:
    return await make_adapter("http")


class HttpSender:
    """Delivers events the way Slack does in HTTP mode: signed POSTs to the adapter's endpoint."""

    def __init__(self, fake: FakeSlack, adapter: SlackAdapter) -> None:
        self.fake = fake
        self.adapter = adapter

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.http_port}{self.adapter.settings.http_path}"

    async def post_raw(self, body: str, headers: dict[str, str]) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.post(self.url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        payload = self.fake.event_body(event, event_id=event_id)
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", **self.fake.sign(body)}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        status, _ = await self.post_raw(body, headers)
        return status, payload

    async def form(self, fields: dict[str, str]) -> tuple[int, str]:
        body = urlencode(fields)
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self.fake.sign(body)}
        return await self.post_raw(body, headers)


@pytest.fixture
def http(fake: FakeSlack, adapter: SlackAdapter) -> HttpSender:
    return HttpSender(fake, adapter)


def mention(fake: FakeSlack, text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE", **extra: Any) -> dict:
    """An app_mention event for a message the user posted (recorded in the fake's channel)."""
    msg = fake.add_user_message(channel, user, f"<@{fake.bot_user_id}> {text}", extra.get("thread_ts"))
    return {
        "type": "app_mention",
        "user": user,
        "text": msg.text,
        "ts": msg.ts,
        "channel": channel,
        "event_ts": msg.ts,
        "team": fake.team_id,
        **extra,
    }


def message(
    fake: FakeSlack, text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE", **extra: Any
) -> dict[str, Any]:
    """A message event (message.channels / message.im ...) for a message the user posted."""
    channel_type = extra.pop("channel_type", "im" if channel.startswith("D") else "channel")
    msg = fake.add_user_message(channel, user, text, extra.get("thread_ts"))
    return {
        "type": "message",
        "user": user,
        "text": text,
        "ts": msg.ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": msg.ts,
        "team": fake.team_id,
        **extra,
    }


class Outcomes:
    """Records what the adapter did with each message event (accepted, duplicate, seen, ignored, error)."""

    def __init__(self, adapter: SlackAdapter) -> None:
        self.items: list[tuple[dict[str, Any], str]] = []
        self._changed = asyncio.Event()
        adapter.messages.observers.append(self._observe)

    def _observe(self, event: dict[str, Any], outcome: str) -> None:
        self.items.append((event, outcome))
        self._changed.set()

    @property
    def names(self) -> list[str]:
        return [o for _, o in self.items]

    async def wait_count(self, n: int, within: float = 5.0) -> list[str]:
        async def _wait() -> None:
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), within)
        return self.names


@pytest.fixture
def outcomes(adapter: SlackAdapter) -> Outcomes:
    return Outcomes(adapter)
