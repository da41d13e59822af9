"""Draw docs/demo.svg, the README's picture of `switchboard demo`, from a real demo session (run it again after
changing what the terminal chat shows: `python -m benchmarks.demo_svg`). Not a test: it prints where it wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
import tempfile
import tomllib
from pathlib import Path

from rich.console import Console
from rich.text import Text

from adapters.console import PROMPT, ConsoleSurface, chat
from bot.config import parse_config
from bot.engine import Bot
from emulator import run_emulator
from switchboard.demo import DEMO_CONVERSATION, DEMO_HINT, DEMO_TEAM

OUT = Path(__file__).resolve().parents[1] / "docs" / "demo.svg"
MESSAGES = ("hello", "ask the researcher and the critic about our launch")
WIDTH = 100


async def session() -> str:
    """The demo's screen, as text: prompts, progress lines and answers in the order they appeared."""
    screen = io.StringIO()
    async with run_emulator(token_delay=0.0) as emu:
        with tempfile.TemporaryDirectory() as folder:
            team = dataclasses.replace(parse_config(tomllib.loads(DEMO_TEAM), env={}), base_url=emu.base_url,
                                       api_key="demo", db_path=str(Path(folder) / "demo.db"))
            bot = Bot.from_config(team)
            surface = ConsoleSurface(out=screen, err=screen, live=False, separate=False)
            bot.add_surface(surface)
            await bot.start()
            try:
                screen.write("$ switchboard demo\n" + DEMO_HINT + "\n")
                for message in MESSAGES:
                    screen.write(f"{PROMPT}{message}\n")
                    await chat(bot, surface, DEMO_CONVERSATION, stdin=io.StringIO(message + "\n"))
            finally:
                await bot.stop()
    return screen.getvalue()


def main() -> int:
    text = asyncio.run(session())
    console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True)
    for line in text.splitlines():
        style = "bold cyan" if line.startswith(("$ ", PROMPT)) else "dim" if line[:1] in "…✓✗↻" else ""
        console.print(Text(line, style=style))
    console.save_svg(str(OUT), title="switchboard demo")
    print(f"wrote {OUT} ({len(text.splitlines())} lines)", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
