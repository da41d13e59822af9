"""Engine CPU of a delegated turn (the proxy asks 4 sub-assistants at once, every run streamed), and where it goes.

    python -m benchmarks.profile_turn [--turns 40] [--profile] [--threads conversations]
    python -m benchmarks.profile_turn --compare-sdk [--blocks 6]   # the lean stream reader against the SDK's

Runs the emulator in its own process (zero latency) and the engine in this one, sends `--turns` follow-up turns
one at a time in one conversation, and prints the engine process's CPU time per turn (user + system). With
`--profile` (needs `pip install pyinstrument`) it also prints where that time went. `--compare-sdk` alternates
blocks of `--turns` turns with creates and resumes sent through `bot.backends.sse` and through the `openai` SDK (the
path before it), in one process and conversation, and prints both (the emulator process's CPU per turn too).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from benchmarks.common import emulator_process, make_team, temp_db
from benchmarks.load import LoadSurface, conversations
from bot.engine import Bot

TEXT = "ask the team to check the plan"


async def compare(turns: int, blocks: int) -> None:
    import psutil

    async with emulator_process() as url:
        emulator = psutil.Process().children()[0]
        bot = Bot.from_config(make_team(url, temp_db(), subs=4))
        surface = LoadSurface()
        bot.add_surface(surface)
        await bot.start()
        streams = bot.backend.streams  # type: ignore[attr-defined]
        [conv] = conversations(1)
        for _ in range(3):
            await surface.send(bot, conv, TEXT)
        cpu: dict[str, list[float]] = {"lean": [], "sdk": []}
        emu: dict[str, list[float]] = {"lean": [], "sdk": []}
        for block in range(blocks):
            for name in ("lean", "sdk") if block % 2 == 0 else ("sdk", "lean"):
                streams.enabled = name == "lean"
                await surface.send(bot, conv, TEXT)  # first turn on this path: not measured
                ours, theirs = time.process_time(), _cpu(emulator)
                for _ in range(turns):
                    await surface.send(bot, conv, TEXT)
                cpu[name].append((time.process_time() - ours) / turns * 1000)
                emu[name].append((_cpu(emulator) - theirs) / turns * 1000)
        await bot.stop()
    for name in ("lean", "sdk"):
        print(f"{name:5} engine CPU per delegated turn: median {statistics.median(cpu[name]):.1f} ms "
              f"(blocks: {', '.join(f'{v:.1f}' for v in cpu[name])}); emulator {statistics.median(emu[name]):.1f} ms")
    print(f"lean / sdk: {statistics.median(cpu['lean']) / statistics.median(cpu['sdk']):.2f}")


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run(turns: int, profile: bool, threads: str) -> None:
    async with emulator_process() as url:
        bot = Bot.from_config(make_team(url, temp_db(), subs=4, threads=threads))
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
    print(f"{turns} delegated turns (4 sub-assistants each, streamed, threads: {threads}): engine CPU "
          f"{cpu / turns * 1000:.1f} ms per turn, wall {wall / turns * 1000:.1f} ms per turn (zero provider latency)")
    if profiler is not None:
        print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", choices=("chains", "conversations"), default="chains",
                        help="what the Responses backend's threads are (`[openai] threads`)")
    parser.add_argument("--compare-sdk", action="store_true", help="lean stream reader against the SDK's, alternating")
    parser.add_argument("--blocks", type=int, default=6, help="with --compare-sdk: blocks of --turns turns per path")
    args = parser.parse_args()
    if args.compare_sdk:
        asyncio.run(compare(args.turns, args.blocks))
    else:
        asyncio.run(run(args.turns, args.profile, args.threads))


if __name__ == "__main__":
    main()
