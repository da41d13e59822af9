"""Engine CPU of a delegated turn (the proxy asks 4 sub-assistants at once, every run streamed), and where it goes.

    python -m benchmarks.profile_turn [--turns 40] [--profile]

Runs the emulator in its own process (zero latency) and the engine in this one, sends `--turns` follow-up turns
one at a time in one conversation, and prints the engine process's CPU time per turn (user + system). With
`--profile` (needs `pip install pyinstrument`) it also prints where that time went.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.common import emulator_process, make_team, temp_db
from benchmarks.load import LoadSurface, conversations
from bot.engine import Bot

TEXT = "ask the team to check the plan"


async def run(turns: int, profile: bool) -> None:
    async with emulator_process() as url:
        bot = Bot.from_config(make_team(url, temp_db(), subs=4))
        surface = LoadSurface()
        bot.add_surface(surface)
        await bot.start()
        [conv] = conversations(1)
        for _ in range(3):  # first turn and warm-up
            await surface.send(bot, conv, TEXT)
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled", interval=0.0005)
            profiler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(turns):
            await surface.send(bot, conv, TEXT)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler is not None:
            profiler.stop()
        await bot.stop()
    print(f"{turns} delegated turns (4 sub-assistants each, streamed): engine CPU {cpu / turns * 1000:.1f} ms per turn,"
          f" wall {wall / turns * 1000:.1f} ms per turn (zero provider latency)")
    if profiler is not None:
        print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.profile))


if __name__ == "__main__":
    main()
