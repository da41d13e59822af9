"""`switchboard run` with Slack enabled, as an operator starts it, against the fake Slack: startup and shutdown
logs carry no library noise (bolt's token notes, unclosed HTTP sessions), also when Slack refuses a token."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from emulator import run_emulator
from fakes.slack_api import FakeSlack

REPO = Path(__file__).resolve().parents[2]
NOISE = ("Unclosed", "Traceback", "`token`", "voice will NOT")
CONNECT_TIMEOUT = 30.0


async def start_run(folder: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    example = (REPO / "switchboard.example.toml").read_text()
    (folder / "switchboard.toml").write_text(example.replace("[slack]\nenabled = false", "[slack]\nenabled = true"))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "run", cwd=folder, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def slack_env(fake: FakeSlack, base_url: str, app_token: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": base_url, "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_APP_TOKEN": app_token, "SLACK_API_BASE_URL": fake.api_url}


async def test_run_starts_and_stops_quietly(fake: FakeSlack, tmp_path: Path):
    async with run_emulator() as emu:
        proc = await start_run(tmp_path, slack_env(fake, emu.base_url, fake.app_token))
        await fake.wait_for(lambda: fake.hellos_sent, within=CONNECT_TIMEOUT)  # the Socket Mode connection is up
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert not any(noise in err.decode() for noise in NOISE), err.decode()


async def test_a_refused_app_token_is_one_clear_line_and_nothing_left_open(fake: FakeSlack, tmp_path: Path):
    async with run_emulator() as emu:
        proc = await start_run(tmp_path, slack_env(fake, emu.base_url, "xapp-1-wrong"))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, raw = await proc.communicate()
    err = raw.decode()
    assert proc.returncode == 1 and "Slack rejected SLACK_APP_TOKEN" in err
    assert not any(noise in err for noise in NOISE), err
