"""`switchboard emulator` (bot.emulator.cli.run_from_args) in a real subprocess: it announces its address,
serves the SDK, loads a scripts file and stops cleanly on SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import openai

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0

LAUNCHER = """
import argparse, sys
from bot.emulator.cli import run_from_args
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
