"""No token or signing secret ever reaches the logs, at DEBUG level, in either mode, even when things fail."""

from __future__ import annotations

import logging

import pytest

from adapters.slack import SlackAdapter
from bot.types import Failed, Reply, Started
from fakes.slack_api import FakeSlack
from tests.slack.conftest import HttpSender, mention, settings_for
from tests.slack.fake_bot import FakeBot

BOT_TOKEN = "xoxb-918273645501-918273645502-Zq8xRk2LmN4pVw7sTy1uAb3C"
APP_TOKEN = "xapp-1-A0918273645-918273645503-5f2e9c0d7b1a4e3f8a6b2c9d0e1f7a3b5c4d6e8f"
SIGNING_SECRET = "8d1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c"


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_secrets_never_logged(mode: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET) as fake:
        bot = FakeBot()
        bot.script = lambda inbound: [Started(), Failed("boom"), Reply("The provider failed.", kind="failure")]
        fake.rate_limit("chat.postMessage", times=1, retry_after=0)  # a retried call, logged by the SDK
        adapter = SlackAdapter(bot, settings_for(fake, mode))
        await adapter.start()
        try:
            event = mention(fake, "fail please")
            if mode == "http":
                await HttpSender(fake, adapter).event(event)
                # and a forged request, which bolt logs as rejected
                await HttpSender(fake, adapter).post_raw(
                    "{}", {"X-Slack-Signature": "v0=00", "X-Slack-Request-Timestamp": "1"}
                )
            else:
                await fake.push_envelope("events_api", fake.event_body(event))
            await bot.wait_deliveries(1)
            await fake.wait_for(lambda: fake.calls_to("assistant.threads.setStatus")[-1].args["status"] == "")
        finally:
            await adapter.stop()
        assert repr(adapter.settings).count("xox") == 0
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert caplog.records, "expected DEBUG output from bolt and the SDK"
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in text
        assert secret[-16:] not in text
