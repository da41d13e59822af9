"""Engine overhead per turn and fan-out ratio, against the emulator running in its own process.

    python -m benchmarks.engine_overhead [--provider-seconds 0.2] [--sub-seconds 0.5] [--concurrency 200]

Overhead = turn time (accepted -> reply delivered) minus the time the emulator spent serving the turn's requests
(read from its request log; they are sequential in a plain turn): what the engine, the SDK and the local HTTP hop
add on top of the provider. Targets (issue 3): p50 < 5 ms at 1 conversation; fan-out ratio (4 subs / 1 sub of
equal latency) < 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from benchmarks.common import (
    bench_bot,
    emulator_process,
    emulator_seconds,
    make_team,
    new_conversations,
    percentile,
    temp_db,
    timed_turns,
)
from bot.engine import Bot


async def row(label: str, bot: Bot, url: str, turns: dict[str, float], first_turns: bool = False) -> str:
    provider = await emulator_seconds(bot, url, list(turns), first_turns)
    over = [(turns[c] - provider[c]) * 1000 for c in turns]
    total = [t * 1000 for t in turns.values()]
    return (f"{label:<40} n={len(over):<5} overhead p50={percentile(over, 50):7.2f} ms  p99={percentile(over, 99):7.2f}"
            f" ms   (turn p50 {percentile(total, 50):7.1f} ms)")


async def overhead(provider: float, concurrency: int, sequential: int) -> list[str]:
    scripts = {"proxy": [{"delay": provider}]}
    lines = []
    async with emulator_process(scripts) as url, bench_bot(make_team(url, temp_db())) as (bot, surface):
        [conversation] = new_conversations(1)
        await timed_turns(bot, surface, ["warm up"], [conversation])
        one: dict[str, float] = {}
        for _ in range(sequential):
            one |= await timed_turns(bot, surface, ["hello"], [conversation])
        lines.append(await row("1 conversation, follow-up turns", bot, url, one))
        firsts: dict[str, float] = {}
        for _ in range(sequential):
            firsts |= await timed_turns(bot, surface, ["hello"])
        lines.append(await row("1 conversation, first turns", bot, url, firsts, first_turns=True))
        many_convs = new_conversations(concurrency)
        await timed_turns(bot, surface, ["hello"] * concurrency, many_convs)
        many = await timed_turns(bot, surface, ["hello again"] * concurrency, many_convs)
        lines.append(await row(f"{concurrency} concurrent conversations", bot, url, many))
    return lines


async def fan_out(sub_seconds: float, rounds: int) -> list[str]:
    lines = []
    results = {}
    for k in (1, 2, 4, 8):
        scripts = {f"s{i}": [{"delay": sub_seconds}] for i in range(1, k + 1)}
        async with emulator_process(scripts) as url, bench_bot(make_team(url, temp_db(), subs=k)) as (bot, surface):
            await timed_turns(bot, surface, ["ask the team"])
            times: list[float] = []
            for _ in range(rounds):
                times += (await timed_turns(bot, surface, ["ask the team"])).values()
            results[k] = percentile(times, 50)
    for k, value in results.items():
        lines.append(f"fan-out k={k}: turn p50 {value * 1000:7.1f} ms   ratio to k=1: {value / results[1]:.3f}")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider-seconds", type=float, default=1.0, help="scripted latency of each response")
    parser.add_argument("--sub-seconds", type=float, default=0.5, help="scripted latency of each sub-assistant")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=50, help="turns measured one after another")
    parser.add_argument("--rounds", type=int, default=5, help="fan-out turns per k")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for line in await overhead(args.provider_seconds, args.concurrency, args.sequential):
        print(line, flush=True)
    for line in await fan_out(args.sub_seconds, args.rounds):
        print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
