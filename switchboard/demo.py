"""`switchboard demo`: a proxy and three sub-assistants on the bundled emulator, in this terminal, with no keys.

The conversation is kept in its own database (`DEMO_DB_PATH` by default, never the bot's: a demo turn interrupted
by Ctrl-C must not be resumed against the real provider by `switchboard run`), which `switchboard status` reads when
there is no team file and no bot database yet. `--backend` picks the API the team runs on (responses, assistants,
or chat: Chat Completions, as on a local model server). `--config` runs a team file instead (e.g. the patterns in
examples/: delegation, handoffs, both), its provider settings replaced by the emulator's. The emulator runs in-process
on a free port and answers with its default scripted behaviour (it delegates when offered `ask_*` tools and hands the
conversation on when offered `transfer_to_*` tools and the user names that assistant), each sub-assistant asked by
another taking `work_seconds` to "work".
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import TeamConfig

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
    token_delay: float, work_seconds: float, db_path: str, jsonl: bool = False, backend: str | None = None,
    config: str | None = None,
) -> int:
    """Run the demo chat until standard input ends; returns the exit code. Raises ConfigError for a bad team file."""
    from bot.config import load_config, parse_config
    from emulator import run_emulator
    from emulator.scripts import Rule, Script
    from switchboard.runner import run_console

    team = load_config(config, env={}) if config else parse_config(tomllib.loads(DEMO_TEAM), env={})
    # the emulator stands in for every provider the file names
    members = {a.name: dataclasses.replace(a, backend=None, base_url=None, api_key_env=None, api_version=None,
                                           max_context_tokens=None) for a in team.members}
    team = dataclasses.replace(team, proxy=members[team.proxy.name], subs=tuple(members[s.name] for s in team.subs),
                               backend=backend or team.backend, api_keys={})  # type: ignore[arg-type]
    slow = Script(rules=[Rule(delay=work_seconds)])  # default behaviour, but each asked sub takes a moment
    asked = {s.name for member in team.members for s in team.delegates_of(member)}
    async with run_emulator(token_delay=token_delay, scripts=dict.fromkeys(asked, slow)) as emu:
        team = dataclasses.replace(team, base_url=emu.base_url, api_key="demo", db_path=db_path)
        if sys.stdin.isatty():
            print(_hint(team) if config else DEMO_HINT, file=sys.stderr)
        return await run_console(team, DEMO_CONVERSATION, jsonl=jsonl)


def _hint(team: TeamConfig) -> str:
    lines = [f"Switchboard demo of {team.source}: on a local emulator. The conversation starts with "
             f"{team.entry_agent.name}."]
    for member in team.members:
        what = []
        if member.handoffs:
            what.append("hands over to " + ", ".join(member.handoffs))
        asked = [s.name for s in team.delegates_of(member)]
        if asked:
            what.append("asks " + ", ".join(asked))
        lines.append(f"  {member.name}: {'; '.join(what) or 'answers'}")
    lines.append("Name an assistant to be handed to it (e.g. 'the editor please'), or ask for one to be consulted "
                 "('ask the researcher'). Ctrl-D quits.")
    return "\n".join(lines)
