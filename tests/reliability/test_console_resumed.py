"""Piped `switchboard chat` after a crash, run as a user would (a real process against the emulator on 127.0.0.1):
the answer to a message from before the restart is printed on its own, labelled, and each new line still becomes
its own turn with its own answer, in input order, answers separated by a blank line."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from bot.orchestrator import MAIN_THREAD
from emulator import ManualClock, Rule, Script, run_emulator
from storage.base import InboxMessage, TurnRecord
from storage.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0
CONVERSATION = "console:local:default"  # what `switchboard chat` uses without --conversation


def chat_env(tmp_path: Path, base_url: str) -> dict[str, str]:
    team = tmp_path / "team.toml"
    team.write_text((REPO / "switchboard.example.toml").read_text())
    return {**os.environ, "PYTHONPATH": str(REPO), "SWITCHBOARD_CONFIG": str(team),
            "SWITCHBOARD_DB": str(tmp_path / "chat.db"), "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": base_url}


async def start_chat(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "chat", cwd=REPO, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def piped_chat(env: dict[str, str], stdin: str) -> tuple[int, str, str]:
    proc = await start_chat(env)
    async with asyncio.timeout(WAIT):
        out, err = await proc.communicate(stdin.encode())
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_turn_resumed_after_a_crash_is_answered_apart_and_labelled_then_each_line_in_order(tmp_path):
    clock = ManualClock()
    proxy = Script(rules=[Rule(match="slowly", delay=5, times=1)])  # only the first request waits for the clock
    async with run_emulator(clock=clock, scripts={"proxy": proxy}) as emu:
        env = chat_env(tmp_path, emu.base_url)
        first_life = await start_chat(env)
        try:
            assert first_life.stdin is not None
            first_life.stdin.write(b"please answer slowly\n")
            await first_life.stdin.drain()
            # The turn is recorded before the proxy is asked, so from here on the database holds an unfinished turn.
            await emu.wait_until(lambda: any(r.agent == "proxy" for r in emu.responses.values()), within=WAIT)
        finally:
            first_life.kill()
            await first_life.wait()
        await clock.advance(5)  # the interrupted response completes while no bot runs

        code, out, err = await piped_chat(env, "first\nsecond\n")

    assert code == 0, err
    assert out == (
        '(answer to your earlier message "please answer slowly", interrupted by a restart)\n'
        "You said: please answer slowly\n"
        "\n"
        "You said: first\n"
        "\n"
        "You said: second\n"
    ), err


async def test_a_message_left_waiting_behind_an_interrupted_turn_gets_its_own_labelled_answer(tmp_path):
    # The interrupted question takes a second to answer, so that the new lines arrive while it is resumed: a line
    # sent then would join the waiting message's turn. The assertion holds however long it takes.
    proxy = Script(rules=[Rule(match="interrupted", delay=1.0, times=1)])
    async with run_emulator(scripts={"proxy": proxy}) as emu:
        env = chat_env(tmp_path, emu.base_url)
        store = SQLiteStore(env["SWITCHBOARD_DB"])
        await store.open()
        try:  # what a crash mid-turn leaves when a message came in during that turn (as older versions let it)
            interrupted, meanwhile = (
                InboxMessage(event_id, CONVERSATION, "console", "console:local", "you", text, {}, time.time())
                for event_id, text in (("before-1", "an interrupted question"), ("before-2", "sent meanwhile"))
            )
            await store.add_inbound(interrupted)
            await store.start_turn(TurnRecord.new(CONVERSATION, 0), [interrupted], MAIN_THREAD)
            await store.add_inbound(meanwhile)
        finally:
            await store.close()

        code, out, err = await piped_chat(env, "first\nsecond\n")

    assert code == 0, err
    assert out.split("\n\n") == [
        "(answer to an earlier message, interrupted by a restart)\nYou said: an interrupted question",
        "(answer to an earlier message, interrupted by a restart)\nYou said: sent meanwhile",
        "You said: first",
        "You said: second\n",
    ], err
