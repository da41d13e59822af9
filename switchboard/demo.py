"""`switchboard demo`: a proxy and three sub-assistants on the bundled emulator, in this terminal, with no keys.

The conversation is kept in its own database (`DEMO_DB_PATH` by default, never the bot's: a demo turn interrupted
by Ctrl-C must not be resumed against the real provider by `switchboard run`), which `switchboard status` reads when
there is no team file and no bot database yet. `--backend` picks the API the team runs on (responses, assistants,
or chat: Chat Completions, as on a local model server). The emulator runs in-process on a free port and answers with
its default scripted behaviour, each sub-assistant taking `work_seconds` to "work".
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib

DEMO_TEAM = """
[proxy]
name = "proxy"
instructions = "You are the front desk of a small team; delegate to teammates when their skills help."

[[assistants]]
name = "researcher"
description = "Finds facts and sources."
instructions = "Research the task and answer with facts."

[[assistants]]
name = "critic"
description = "Finds the weaknesses of a plan or draft."
instructions = "Criticise fairly, most important problem first."

[[assistants]]
name = "planner"
description = "Turns a goal into an ordered plan."
instructions = "Write short ordered plans."
"""
DEMO_HINT = (
    "Switchboard demo: a proxy and three sub-assistants (researcher, critic, planner) on a local emulator.\n"
    "Try: 'ask the researcher and the critic about our launch', or 'ask the team to plan a party'. Ctrl-D quits."
)
DEMO_CONVERSATION = "console:demo:default"
DEMO_DB_PATH = "switchboard-demo.db"


async def run_demo(
    token_delay: float, work_seconds: float, db_path: str, jsonl: bool = False, backend: str = "responses"
) -> int:
    """Run the demo chat until standard input ends; returns the exit code."""
    from bot.config import parse_config
    from emulator import run_emulator
    from emulator.scripts import Rule, Script
    from switchboard.runner import run_console

    slow = Script(rules=[Rule(delay=work_seconds)])  # default behaviour, but each sub takes a moment
    scripts = {"researcher": slow, "critic": slow, "planner": slow}
    async with run_emulator(token_delay=token_delay, scripts=scripts) as emu:
        team = parse_config(tomllib.loads(DEMO_TEAM), env={})
        team = dataclasses.replace(team, base_url=emu.base_url, api_key="demo", db_path=db_path,
                                   backend=backend)  # type: ignore[arg-type]
        if sys.stdin.isatty():
            print(DEMO_HINT, file=sys.stderr)
        return await run_console(team, DEMO_CONVERSATION, jsonl=jsonl)
