"""A timeline of one delegated turn: the engine's steps beside the emulator's request log, to see where the time
over the provider floor goes.

    python -m benchmarks.timeline [--turns 5] [--proxy-seconds 0.5] [--sub-seconds 1.0] [--subs 4]

Runs the emulator in its own process (the peers workload: the proxy asks every sub-assistant at once, they answer,
the proxy sums up), sends warm-up turns, then times `--turns` follow-up turns one at a time and prints, for the
last, every step on one clock (wall time, ms from the message being handed to `Bot.accept`): store calls (start
and end), run creates sent and answered, stream snapshots received, the emulator's own record of each response
(created, finished) and the surface calls. Then, per turn, the time over the floor split into: before the first
create, the gaps between a response finishing at the emulator and the engine sending the next create, and after the
last response finished. Instrumentation is by wrapping methods in this process only (no engine code changes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from benchmarks.common import emulator_process, make_team, temp_db
from benchmarks.load import LoadSurface, conversations
from bot.backends import responses
from bot.backends.base import RunEvent, Snapshot
from bot.engine import Bot

TEXT = "ask the team to check the plan"
Event = tuple[float, str]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def mark(self, what: str) -> None:
        self.events.append((time.time(), what))

    def wrap_async(self, owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.mark(f"{label} >")
            try:
                return await original(*args, **kwargs)
            finally:
                self.mark(f"{label} <")

        setattr(owner, name, wrapper)


def instrument(bot: Bot, rec: Recorder) -> None:
    for name, member in inspect.getmembers(type(bot.store)):
        if not name.startswith("_") and inspect.iscoroutinefunction(member) and name not in ("open", "close"):
            rec.wrap_async(bot.store, name, f"store.{name}")
    backend = bot.backend
    original_start = backend.start

    async def start(request: Any) -> Any:
        rec.mark(f"create {request.agent.name} sent")
        stream = await original_start(request)
        rec.mark(f"create {request.agent.name} answered (headers)")
        return stream

    backend.start = start  # type: ignore[method-assign]
    original_events = responses.ResponseStream._events

    async def events(self: responses.ResponseStream) -> AsyncIterator[RunEvent]:
        async for event in original_events(self):
            if isinstance(event, Snapshot):
                rec.mark(f"event {event.state.status} {event.state.id[-6:]}")
            else:
                rec.mark(f"event delta {(self.run_id or '')[-6:]}")
            yield event

    responses.ResponseStream._events = events  # type: ignore[method-assign]


async def run(args: argparse.Namespace) -> None:
    scripts: dict[str, Any] = {"proxy": [{"delay": args.proxy_seconds}]}
    scripts |= {f"s{i}": [{"delay": args.sub_seconds}] for i in range(1, args.subs + 1)}
    floor = 2 * args.proxy_seconds + args.sub_seconds
    async with emulator_process(scripts) as url, aiohttp.ClientSession() as http:
        control = url.removesuffix("/v1") + "/_emulator"
        bot = Bot.from_config(make_team(url, temp_db(), subs=args.subs))
        surface = LoadSurface()
        bot.add_surface(surface)
        await bot.start()
        [conv] = conversations(1, "timeline")
        for _ in range(2):
            await surface.send(bot, conv, TEXT)
        rec = Recorder()
        instrument(bot, rec)
        overs = []
        for _ in range(args.turns):
            rec.events.clear()
            async with http.get(control + "/objects") as r:
                seen = {o["id"] for o in (await r.json())["responses"]}
            async with http.get(control + "/log") as r:
                cursor = len((await r.json())["entries"])
            sent = time.time()
            timing = await surface.send(bot, conv, TEXT)
            turn_seconds = timing.seconds
            delivered = sent + turn_seconds
            await asyncio.sleep(0.2)
            async with http.get(control + "/objects") as r:
                mine = [o for o in (await r.json())["responses"] if o["id"] not in seen]
            emu: list[Event] = []
            for o in mine:
                emu.append((o["created_at"], f"EMU {o['agent']} {o['id'][-6:]} created"))
                emu.append((o["finished_at"], f"EMU {o['agent']} {o['id'][-6:]} finished ({o['status']})"))
            async with http.get(control + "/log", params={"since": str(cursor)}) as r:
                entries = (await r.json())["entries"]
            cursor += len(entries)
            for e in entries:
                emu.append((e["t_start"], f"EMU {e['method']} {e['template']} {e['agent']} received"))
                emu.append((e["t_end"], f"EMU {e['method']} {e['template']} {e['agent']} ended ({e['events']} events)"))
            emu.append((sent + (timing.started - timing.sent), "surface: Started"))
            emu.append((delivered, "surface: deliver"))
            delays = {"proxy": args.proxy_seconds} | {f"s{i}": args.sub_seconds for i in range(1, args.subs + 1)}
            overs.append(report(sorted(rec.events + emu + [(sent, "accept >")]), sent, turn_seconds, floor, mine,
                                delays, show=args.show))
        await bot.stop()
    print(f"\n{args.turns} follow-up turns, proxy {args.proxy_seconds:g} s, {args.subs} sub-assistant(s) "
          f"{args.sub_seconds:g} s (floor {floor * 1000:.0f} ms); ms along the critical path, median (min - max):")
    for key in overs[0]:
        values = sorted(o[key] for o in overs)
        print(f"  {key:<40} {statistics.median(values):7.2f}  ({values[0]:.2f} - {values[-1]:.2f})")


SEGMENTS = ("accept -> first create sent", "create sent -> emulator has it", "emulator finished -> engine has it",
            "engine has it -> next create sent", "last answer in -> reply delivered", "emulator: beyond the delay")


def report(events: list[Event], sent: float, seconds: float, floor: float, mine: list[dict[str, Any]],
           delays: dict[str, float], show: bool) -> dict[str, float]:
    """The turn's time over the floor, split along its critical path (the slowest sub-assistant of a stage)."""
    if show:
        print(f"\nturn {seconds * 1000:.1f} ms, floor {floor * 1000:.0f} ms, over {(seconds - floor) * 1000:.1f} ms")
        previous = sent
        for at, what in events:
            if " delta " not in what:
                print(f"  {(at - sent) * 1000:9.2f}  (+{(at - previous) * 1000:6.2f})  {what}")
                previous = at
    creates = [at for at, what in events if what.startswith("create ") and what.endswith(" sent")]
    got = {what.split()[2]: at for at, what in events
           if what.startswith("event ") and what.split()[1] in ("completed", "requires_action")}
    ordered = sorted(mine, key=lambda o: o["created_at"])
    stages = [ordered[:1], ordered[1:-1], ordered[-1:]]
    parts = dict.fromkeys(SEGMENTS, 0.0)
    parts[SEGMENTS[0]] = creates[0] - sent
    index = 0
    previous_in: float | None = None
    for stage in stages:
        stage_sent = creates[index : index + len(stage)]
        index += len(stage)
        last = max(stage, key=lambda o: got[o["id"][-6:]])
        if previous_in is not None:
            parts[SEGMENTS[3]] += min(stage_sent) - previous_in
        parts[SEGMENTS[1]] += last["created_at"] - min(stage_sent)
        parts[SEGMENTS[5]] += last["finished_at"] - last["created_at"] - delays[last["agent"]]
        parts[SEGMENTS[2]] += got[last["id"][-6:]] - last["finished_at"]
        previous_in = got[last["id"][-6:]]
    assert previous_in is not None
    parts[SEGMENTS[4]] = sent + seconds - previous_in
    parts = {k: v * 1000 for k, v in parts.items()}
    parts["total over the floor"] = (seconds - floor) * 1000
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--subs", type=int, default=4)
    parser.add_argument("--proxy-seconds", type=float, default=0.5)
    parser.add_argument("--sub-seconds", type=float, default=1.0)
    parser.add_argument("--show", action="store_true", help="print every turn's full timeline")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
