"""Operators' admin commands from the CLI (through the running bot's admin socket, or offline), one bot per
database, and `switchboard doctor` against the emulator, the fake Slack and the fake Discord."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bot.admin_socket import AlreadyRunning
from bot.engine import Bot
from emulator import Rule, Script, run_emulator
from fakes.discord_server import FakeDiscord
from fakes.slack_api import FakeSlack
from storage.sqlite import SQLiteStore
from switchboard.doctor import run_doctor
from tests.engine.harness import inbound, running_bot, team

REPO = Path(__file__).resolve().parents[2]
CONV = "console:test:c1"


def team_file(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "team.toml"
    path.write_text(
        f'[proxy]\ninstructions = "You are the proxy."\n'
        f'[[assistants]]\nname = "critic"\ndescription = "The critic."\ninstructions = "Criticise."\n'
        f'[storage]\npath = "{tmp_path / "db"}"\n[openai]\nbase_url = "{base_url}"\n{extra}'
    )
    return path


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", *args, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "k", **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_cancel_reaches_the_running_bot_through_its_admin_socket(emu, tmp_path):
    emu.scripts["critic"] = Script(rules=[Rule(delay=30.0)])
    config = team_file(tmp_path, emu.base_url)
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
        await bot.accept(inbound("ask the critic"))
        await surface.wait_event("delegated")
        assert os.stat(str(tmp_path / "db") + ".admin.sock").st_mode & 0o777 == 0o600
        code, out, err = await cli("cancel", "--config", str(config), "--conversation", CONV)
        assert code == 0, err
        assert out.strip() == "Cancelled the running turn."
        [(_, reply)] = await surface.wait_for(1)
        assert reply.kind == "notice"
        [critic] = [r for r in emu.responses.values() if r.agent == "critic"]
        assert critic.status == "cancelled" and critic.cancelled_by == "client"
        [entry] = await bot.store.recent_audit()
        assert entry.actor.startswith("operator:") and entry.action == "cancel" and entry.outcome == "done"


async def test_cli_reset_and_audit_work_offline_when_no_bot_runs(emu, tmp_path):
    config = team_file(tmp_path, emu.base_url)
    async with running_bot(team(emu.base_url, tmp_path / "db")) as (bot, surface):
        await bot.accept(inbound("hello"))
        await surface.wait_for(1)
    code, out, err = await cli("reset", "--config", str(config), "--conversation", CONV)
    assert code == 0, err
    assert out.startswith("Done")
    code, out, _ = await cli("audit", "--config", str(config))
    assert code == 0 and "reset console:test:c1 -> done" in out
    store = SQLiteStore(tmp_path / "db")
    await store.open()
    assert (await store.get_conversation(CONV)).generation == 1
    await store.close()
    code, _, err = await cli("reset", "--config", str(config), "--all")
    assert code == 1 and "--yes" in err
    code, out, _ = await cli("reset", "--config", str(config), "--all", "--yes")
    assert code == 0 and out.startswith("Reset all 1 conversation(s)")


async def test_one_bot_per_database(emu, tmp_path):
    cfg = team(emu.base_url, tmp_path / "db")
    async with running_bot(cfg):
        second = Bot.from_config(cfg)
        with pytest.raises(AlreadyRunning, match="another Switchboard process"):
            await second.start()


async def test_doctor_checks_every_credential_against_its_service(tmp_path):
    slack = await FakeSlack().start()
    discord_fake = await FakeDiscord().start()
    try:
        async with run_emulator(api_key="sk-right-key-0123456789abcdef") as emu:
            config = team_file(tmp_path, emu.base_url, "[slack]\nenabled = true\n[discord]\nenabled = true\n")
            env = {
                "OPENAI_API_KEY": "sk-right-key-0123456789abcdef",
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_APP_TOKEN": slack.app_token,
                "SLACK_API_BASE_URL": slack.api_url,
                "DISCORD_TOKEN": discord_fake.token,
            }
            with discord_fake.patched():
                good = await run_doctor(str(config), env)
                assert all(f.ok for f in good), [f.line() for f in good]
                assert {f.what.split(" ")[0] for f in good} >= {"team", "database", "OpenAI-compatible", "Slack",
                                                                 "Discord"}
                bad_env = {**env, "OPENAI_API_KEY": "sk-wrong-key-0123456789abcdef",
                           "SLACK_BOT_TOKEN": "xoxb-wrong-0000", "DISCORD_TOKEN": "wrong-discord-token"}
                bad = await run_doctor(str(config), bad_env)
            failed = {f.what.split(" ")[0]: f.detail for f in bad if not f.ok}
            assert "OPENAI_API_KEY" in failed["OpenAI-compatible"]
            assert "SLACK_BOT_TOKEN" in failed["Slack"]
            assert "DISCORD_TOKEN" in failed["Discord"]
            printed = "\n".join(f.line() for f in bad)
            for secret in ("sk-wrong-key-0123456789abcdef", "xoxb-wrong-0000", "wrong-discord-token"):
                assert secret not in printed
    finally:
        await slack.stop()
        await discord_fake.close()


async def test_doctor_explains_a_broken_team_file_and_exits_non_zero(tmp_path):
    (tmp_path / "team.toml").write_text("[proxy]\n")
    code, out, _ = await cli("doctor", "--config", str(tmp_path / "team.toml"))
    assert code == 1
    assert "proxy.instructions" in out and "1 problem(s) found." in out


async def test_doctor_checks_each_distinct_provider_of_a_mixed_team(tmp_path):
    async with run_emulator(api_key="key-a") as cloud, run_emulator(api_key="key-b") as local:
        extra = (f'[[assistants]]\nname = "planner"\ndescription = "Plans."\ninstructions = "Plan."\n'
                 f'backend = "chat"\nbase_url = "{local.base_url}"\napi_key_env = "LOCAL_KEY"\n'
                 f'[[assistants]]\nname = "writer"\ndescription = "Writes."\ninstructions = "Write."\n'
                 f'backend = "chat"\nbase_url = "{local.base_url}"\napi_key_env = "LOCAL_KEY"\n')
        config = team_file(tmp_path, cloud.base_url, extra)
        good = await run_doctor(str(config), {"OPENAI_API_KEY": "key-a", "LOCAL_KEY": "key-b"})
        providers = [f for f in good if f.what.startswith("OpenAI-compatible")]
        assert [(f.ok, f.what.split(" (for ")[1]) for f in providers] == [
            (True, "proxy, critic)"), (True, "planner, writer)"),
        ]
        bad = await run_doctor(str(config), {"OPENAI_API_KEY": "key-a", "LOCAL_KEY": "key-wrong"})
        [failed] = [f for f in bad if not f.ok]
        assert "chat at " + local.base_url in failed.what and "LOCAL_KEY" in failed.detail
        assert "key-wrong" not in "\n".join(f.line() for f in bad)
        missing = await run_doctor(str(config), {"OPENAI_API_KEY": "key-a"})
        assert [f.detail.split(" ")[0] for f in missing if not f.ok] == ["LOCAL_KEY"]
