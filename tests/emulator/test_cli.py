"""`switchboard emulator` (emulator.cli.run_from_args) in a real subprocess: it announces its address,
serves the SDK, loads a scripts file and stops cleanly on SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0

LAUNCHER = """
import argparse, sys
from emulator.cli import run_from_args
args = argparse.Namespace(host="127.0.0.1", port=0, latency=0.0, token_delay=0.0, scripts=sys.argv[1])
sys.exit(run_from_args(args))
"""


async def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts.yaml"
    scripts.write_text("critic:\n  rules:\n    - reply: 'scripted {input}'\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCHER,
        str(scripts),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[-1].strip()
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
            reply = await client.responses.create(model="m", input="hi", metadata={"agent": "critic"})
        assert reply.output_text == "scripted hi"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), STARTUP_TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


MANUAL_LAUNCHER = """
import argparse, sys
from emulator.cli import run_from_args
args = argparse.Namespace(host="127.0.0.1", port=0, latency=0.0, token_delay=0.0, scripts=None,
                          manual_clock=True, expiry_seconds=60.0, seed=3, retry_after=None)
sys.exit(run_from_args(args))
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_cli_manual_clock_expires_runs_when_advanced_over_http() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MANUAL_LAUNCHER, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
        base_url = line.rsplit(" ", 1)[-1].strip()
        control = base_url.removesuffix("/v1") + "/_emulator"
        async with (
            openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client,
            aiohttp.ClientSession() as http,
        ):
            critic = await client.beta.assistants.create(model="m", name="critic", tools=[])
            thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
            async with http.put(f"{control}/scripts/critic", json={"rules": [{"delay": 120}]}) as response:
                assert response.status == 200
            run = await client.beta.threads.runs.create(thread.id, assistant_id=critic.id)
            assert run.expires_at == run.created_at + 60
            async with http.post(f"{control}/clock/advance", json={"seconds": 60}) as response:
                assert (await response.json())["manual"] is True
            assert (await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "expired"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), STARTUP_TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
