"""The ops endpoint (/metrics parsed with the Prometheus text parser, /healthz) and secrets kept out of logs."""

from __future__ import annotations

import io
import logging
import sqlite3

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.logs import setup_logging
from bot.ops import OpsServer
from emulator import Rule, Script
from storage.sqlite import SQLiteStore
from tests.engine.harness import inbound, running_bot, team


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_are_scraped_and_parsed(emu, tmp_path):
    emu.faults.fail("server_error", agent="proxy")
    emu.faults.fail("invalid_prompt", agent="critic", count=None)
    async with running_bot(team(emu.base_url, tmp_path / "db", retry_budget=2)) as (bot, surface):
        ops = OpsServer(bot)
        await ops.start()
        try:
            await bot.accept(inbound("hello"))
            await bot.accept(inbound("ask the critic", conversation="console:test:c2"))
            await surface.wait_for(2)
            await bot.idle()
            async with aiohttp.ClientSession() as session, session.get(ops.url + "/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                metrics = samples(await response.text())
        finally:
            await ops.stop()
    assert metrics[("switchboard_turns_total", (("outcome", "answered"),))] == 2
    assert metrics[("switchboard_recoveries_total", (("reason", "server_error"),))] == 1
    assert metrics[("switchboard_runs_total", (("status", "completed"),))] >= 2
    assert metrics[("switchboard_runs_total", (("status", "failed"),))] == 2  # proxy once, critic once
    assert metrics[("switchboard_tokens_total", (("kind", "input"),))] > 0
    assert metrics[("switchboard_turn_seconds_count", ())] == 2
    assert metrics[("switchboard_messages_accepted_total", (("platform", "console"),))] == 2
    assert ("switchboard_queue_depth", ()) in metrics


async def test_healthz_reports_an_unwritable_database(emu, tmp_path):
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, _):
        assert isinstance(bot.store, SQLiteStore)
        await bot.store.set_pragma("busy_timeout", 100)  # the probe gives up on a held lock in 0.1 s, not 5
        ops = OpsServer(bot)

        async def platform_up() -> bool:
            return True

        ops.add_check("slack", platform_up)
        await ops.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(ops.url + "/healthz") as response:
                    assert response.status == 200
                    assert await response.json() == {"status": "ok", "checks": {"database": True, "slack": True}}
                blocker = sqlite3.connect(tmp_path / "db")
                blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
                try:
                    async with session.get(ops.url + "/healthz") as response:
                        assert response.status == 503
                        assert (await response.json())["checks"]["database"] is False
                finally:
                    blocker.rollback()
                    blocker.close()
                async with session.get(ops.url + "/healthz") as response:
                    assert response.status == 200
        finally:
            await ops.stop()


SECRETS = {
    "OPENAI_API_KEY": "sk-proj-Zq3vN8xR2mT5wY7aB1cD4eF6gH9jK0LpQs",
    "SLACK_BOT_TOKEN": "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "SLACK_APP_TOKEN": "xapp-1-A0123456789-1234567890123-0123456789abcdef0123456789abcdef",
    "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
    "DISCORD_TOKEN": "MTE5NjQ4MzI1NzY0OTk1ODkxMg.GhQx1a.Xb3kP9sLm2Qv8Rt5Wy1Zc4Nd7Ef0Gh3Ij6Kl9Mn",
}


async def test_logs_of_a_failing_turn_never_contain_secrets(emu, tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    emu.api_key = "a-different-key"  # every provider call is refused: a failing turn
    emu.scripts["proxy"] = Script(rules=[Rule(reply="unused")])
    captured = io.StringIO()
    for as_json in (False, True):
        setup_logging("DEBUG", as_json=as_json)
        root = logging.getLogger()
        root.handlers[0].setStream(captured)
        for name in ("openai", "httpx2", "httpcore2", "aiohttp"):
            logging.getLogger(name).setLevel(logging.DEBUG)  # the noisiest libraries too
        try:
            cfg = team(emu.base_url, tmp_path / f"db{as_json}")
            cfg = type(cfg)(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                               "api_key": SECRETS["OPENAI_API_KEY"]})
            async with running_bot(cfg) as (bot, surface):
                await bot.accept(inbound("hello"))
                [(_, reply)] = await surface.wait_for(1)
                assert reply.kind == "failure" and "credentials" in reply.text
                try:
                    raise RuntimeError(f"boom with {SECRETS['SLACK_BOT_TOKEN']} inside")
                except RuntimeError:
                    logging.getLogger("switchboard.test").exception("a crash that mentions a token")
        finally:
            logging.getLogger().handlers.clear()
            for name in ("openai", "httpx2", "httpcore2", "aiohttp"):
                logging.getLogger(name).setLevel(logging.NOTSET)
    output = captured.getvalue()
    assert "a crash that mentions a token" in output and "Traceback" in output
    assert "Authorization" in output or "authorization" in output.lower() or "POST" in output
    for name, value in SECRETS.items():
        assert value not in output, f"{name} leaked into the logs"
        assert value[-12:] not in output, f"part of {name} leaked into the logs"
