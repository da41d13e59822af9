"""The measurements of `benchmarks.performance`, one per fresh process.

    python -m benchmarks.phases NAME '{"param": value, ...}'

prints progress on stderr and, last, one line `RESULT {json}` on stdout. Each phase starts its own emulator
process (`switchboard emulator --port 0`) and runs the engine in this process, so the engine's CPU and memory are
its own: on a 2-core machine the emulator and the engine get one core each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import psutil

from benchmarks.common import REPO, emulator_process, emulator_seconds, make_team, percentile, temp_db
from benchmarks.load import LoadSurface, TurnTiming, burst, closed_loop, conversations
from bot.engine import Bot, make_backend
from bot.types import Inbound, Progress, Reply, Started, TurnRef
from storage.sqlite import SQLiteStore
from switchboard.tuning import tuned_process

TERMINAL_RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete", "superseded")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms_stats(values: list[float]) -> dict[str, float]:
    """p50/p99/max of seconds, in milliseconds."""
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms),
            "mean": sum(ms) / len(ms)}


class Memory:
    """Samples this process's RSS every 100 ms (psutil) while the load runs."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self.t0, self.process.memory_info().rss))
            await asyncio.sleep(0.1)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
        self.samples.append((time.perf_counter() - self.t0, self.process.memory_info().rss))
        mib = 1024 * 1024
        return {
            "rss_peak_mib": max(rss for _, rss in self.samples) / mib,
            "rss_start_mib": self.samples[0][1] / mib,
            "rss_lifetime_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_series": [(round(t, 2), round(rss / mib, 1)) for t, rss in self.samples[::5]],
        }


@asynccontextmanager
async def engine(url: str, subs: int = 1, backend: str = "responses") -> AsyncIterator[tuple[Bot, LoadSurface]]:
    # benchmarks.store_overhead points this at a PostgreSQL database; the default is a fresh SQLite file
    team = make_team(url, os.environ.get("SWITCHBOARD_BENCH_DB") or temp_db(), subs=subs, backend=backend)
    bot = Bot.from_config(team)
    surface = LoadSurface()
    bot.add_surface(surface)
    async with tuned_process():  # what `switchboard run` runs the engine in
        await bot.start()
        try:
            yield bot, surface
        finally:
            await bot.stop()


async def overhead_of(bot: Bot, url: str, timings: list[TurnTiming], first_turns: bool = False) -> dict[str, Any]:
    """Overhead = turn time minus the time the emulator spent serving the turn's requests (its request log)."""
    await asyncio.sleep(0.3)  # the emulator logs a request when its response has ended: let the last ones land
    provider = await emulator_seconds(bot, url, [t.turn_id for t in timings], first_turns)
    result = ms_stats([t.seconds - provider[t.turn_id] for t in timings])
    result["turn_p50"] = ms_stats([t.seconds for t in timings])["p50"]
    result["provider_p50"] = ms_stats(list(provider.values()))["p50"]
    result["indicator"] = ms_stats([t.indicator for t in timings])
    result["indicator_from_sent"] = ms_stats([t.indicator_from_sent for t in timings])
    ratios = [t.seconds / provider[t.turn_id] for t in timings if provider[t.turn_id] > 0]
    if ratios:  # starvation: how far the slowest turns fell behind their own provider time
        result["slowest_over_provider"] = max(ratios)
        result["over_twice_provider"] = sum(1 for r in ratios if r > 2.0)
    return result


# ---- phases ----


async def single(provider: float = 0.5, follow: int = 40, first: int = 20, backend: str = "responses"
                 ) -> dict[str, Any]:
    """One conversation at a time: follow-up turns in one conversation, and first turns of new ones."""
    async with emulator_process({"proxy": [{"delay": provider}]}) as url, engine(url, backend=backend) as (
        bot, surface
    ):
        [conv] = conversations(1)
        await surface.send(bot, conv, "warm up")
        follow_ups = [await surface.send(bot, conv, "hello") for _ in range(follow)]
        firsts = [await surface.send(bot, c, "hello") for c in conversations(first)]
        return {
            "provider_seconds": provider,
            "follow": await overhead_of(bot, url, follow_ups),
            "first": await overhead_of(bot, url, firsts, first_turns=True),
        }


async def steady(count: int = 200, provider: float = 2.0, rounds: float = 5.0) -> dict[str, Any]:
    """`count` conversations, each with one turn always in flight; provider latency `provider`."""
    memory = Memory()
    memory.start()
    async with emulator_process({"proxy": [{"delay": provider}]}) as url, engine(url) as (bot, surface):
        convs = conversations(count)
        cpu = psutil.Process().cpu_times()
        ramp = provider
        run = await closed_loop(bot, surface, convs, "hello", ramp=ramp, warmup=ramp + provider * 1.2,
                                measure=provider * rounds)
        cpu_after = psutil.Process().cpu_times()
        mem = await memory.stop()
        result = await overhead_of(bot, url, run.timings)
        result |= mem
        result |= {
            "conversations": count, "provider_seconds": provider, "rate": run.rate,
            "in_flight_mean": sum(run.in_flight) / len(run.in_flight), "in_flight_min": min(run.in_flight),
            "engine_cpu_ms_per_turn": ((cpu_after.user + cpu_after.system) - (cpu.user + cpu.system)) / run.total
            * 1000,
        }
        return result


async def burst_phase(count: int = 200, provider: float = 2.0, bursts: int = 3) -> dict[str, Any]:
    """Every conversation's message arrives in the same instant; repeated `bursts` times (follow-up turns)."""
    memory = Memory()
    memory.start()
    async with emulator_process({"proxy": [{"delay": provider}]}) as url, engine(url) as (bot, surface):
        convs = conversations(count)
        await burst(bot, surface, convs, "warm up")
        timings: list[TurnTiming] = []
        for _ in range(bursts):
            timings += await burst(bot, surface, convs, "hello")
        result = await overhead_of(bot, url, timings)
        result |= await memory.stop()
        result |= {"conversations": count, "provider_seconds": provider}
        return result


async def throughput(count: int = 32, seconds: float = 10.0, backend: str = "responses") -> dict[str, Any]:
    """Turns per second with zero emulator latency: `count` conversations in a closed loop."""
    async with emulator_process({}) as url, engine(url, backend=backend) as (bot, surface):
        convs = conversations(count)
        await burst(bot, surface, convs, "warm up")
        me = psutil.Process()
        emulator = me.children()[0]
        cpu, emu_cpu, t0 = me.cpu_times(), emulator.cpu_times(), time.perf_counter()
        run = await closed_loop(bot, surface, convs, "hello", ramp=0.0, warmup=0.0, measure=seconds)
        elapsed = time.perf_counter() - t0
        cpu_after, emu_after = me.cpu_times(), emulator.cpu_times()
        used = (cpu_after.user + cpu_after.system) - (cpu.user + cpu.system)
        emu_used = (emu_after.user + emu_after.system) - (emu_cpu.user + emu_cpu.system)
        return {
            "turns_per_second": len(run.timings) / elapsed, "turns": len(run.timings), "seconds": elapsed,
            "conversations": count,
            "engine_cpu_ms_per_turn": used / len(run.timings) * 1000, "engine_cpu_share": used / elapsed,
            "emulator_cpu_share": emu_used / elapsed,
        }


async def fan_out(sub_seconds: float = 0.5, rounds: int = 5, ks: tuple[int, ...] = (1, 2, 4, 8),
                  backend: str = "responses") -> dict[str, Any]:
    """Turn time when the proxy asks k sub-assistants of equal latency at once, divided by the time with one."""
    top = max(ks)
    scripts = {f"s{i}": [{"delay": sub_seconds}] for i in range(1, top + 1)}
    results: dict[str, Any] = {"sub_seconds": sub_seconds, "k": {}}
    async with emulator_process(scripts) as url, engine(url, subs=top, backend=backend) as (bot, surface):
        for k in ks:
            text = "please ask " + " ".join(f"s{i}" for i in range(1, k + 1))
            [conv] = conversations(1)
            await surface.send(bot, conv, text)  # first turn: creates the conversation and the sub threads
            times = [(await surface.send(bot, conv, text)).seconds for _ in range(rounds)]
            results["k"][str(k)] = {"turn_p50_ms": percentile(times, 50) * 1000, "times_ms": [t * 1000 for t in times]}
    base = results["k"][str(ks[0])]["turn_p50_ms"]
    for value in results["k"].values():
        value["ratio"] = value["turn_p50_ms"] / base
    return results


# ---- provider requests, ours against the naive bot ----

SCENARIOS = {"plain": "hello there", "one": "please ask s1 to check the plan", "four": "ask the team to check the plan"}


class EmulatorLog:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.url = base_url.removesuffix("/v1") + "/_emulator/log"
        self.session = session
        self.cursor = 0

    async def entries(self, since: int = 0) -> list[dict[str, Any]]:
        async with self.session.get(self.url, params={"since": str(since)}) as response:
            return list((await response.json())["entries"])

    async def take(self) -> list[dict[str, Any]]:
        """Entries logged since the last call (requests are logged when their response ends)."""
        await asyncio.sleep(0.3)
        new = await self.entries(self.cursor)
        self.cursor += len(new)
        return new


def request_counts(entries: list[dict[str, Any]], turns: int) -> dict[str, float]:
    """Per turn: all /v1 requests, and those that ask about a response's progress (GET /responses/{id})."""
    v1 = [e for e in entries if e["path"].startswith("/v1/")]
    polls = [e for e in v1 if e["method"] == "GET" and e["template"].startswith("/v1/responses/")]
    creates = [e for e in v1 if e["method"] == "POST" and e["template"] == "/v1/responses"]
    threads = [e for e in v1 if e["method"] == "POST" and e["template"] == "/v1/conversations"]
    return {"requests": len(v1) / turns, "polls": len(polls) / turns, "responses_created": len(creates) / turns,
            "conversations_created": len(threads) / turns}


async def naive_turns(url: str, subs: int, text: str, turns: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.naive_bot", "--base-url", url, "--subs", str(subs), "--turns", str(turns),
        "--json", text, cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"naive bot failed ({proc.returncode})")
    return list(json.loads(out.decode().strip().splitlines()[-1])["seconds"])


async def compare(provider: float = 1.0, sub_seconds: float = 5.0, turns: int = 3, naive_count: int = 2,
                  scenarios: tuple[str, ...] = ("plain", "one", "four")) -> dict[str, Any]:
    """Provider requests and turn time per scenario, ours (follow-up and first turns) against the naive bot, on
    the same emulator and team (proxy latency `provider` per response, each sub-assistant `sub_seconds`)."""
    scripts: dict[str, Any] = {"proxy": [{"delay": provider}]}
    scripts |= {f"s{i}": [{"delay": sub_seconds}] for i in range(1, 5)}
    out: dict[str, Any] = {"provider_seconds": provider, "sub_seconds": sub_seconds, "scenarios": {}}
    async with (emulator_process(scripts) as url, engine(url, subs=4) as (bot, surface),
                aiohttp.ClientSession() as session):
        log = EmulatorLog(url, session)
        await log.take()
        for name in scenarios:
            text = SCENARIOS[name]
            [conv] = conversations(1)
            first = await surface.send(bot, conv, text)
            first_counts = request_counts(await log.take(), 1)
            follow = [await surface.send(bot, conv, text) for _ in range(turns)]
            follow_counts = request_counts(await log.take(), turns)
            say(f"compare {name}: ours {percentile([t.seconds for t in follow], 50):.2f} s; running the naive bot")
            naive_seconds = await naive_turns(url, 4, text, naive_count)
            naive_counts = request_counts(await log.take(), naive_count)
            out["scenarios"][name] = {
                "ours_first": first_counts | {"seconds": first.seconds},
                "ours": follow_counts | {"seconds": percentile([t.seconds for t in follow], 50)},
                "naive": naive_counts | {"seconds": percentile(naive_seconds, 50)},
            }
    return out


# ---- restart recovery ----


class RecoverySurface:
    platform = "console"

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.delivered: dict[str, float] = {}

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        if isinstance(event, Started):
            self.started.setdefault(turn.id, time.time())

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        self.delivered[turn.id] = time.time()
        return turn.id

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return None


async def engine_process(url: str, db: str, send: int = 0, sub_seconds: float = 0.0) -> None:
    """The engine process of the restart test (run by `benchmarks.phases engine ...`): start, optionally send
    `send` messages (half answered slowly by the proxy, half delegated to a slow sub-assistant), report on stdout."""
    def report(event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)

    report("imported")
    team = make_team(url, db, subs=1)
    bot = Bot(team, SQLiteStore(db), make_backend(team))
    surface = RecoverySurface()
    bot.add_surface(surface)
    await bot.start()
    report("started", resuming=len(bot._may_resume))  # benchmark-only peek
    for i in range(send):
        text = f"slowproxy please answer {i}" if i % 2 else f"please ask s1 about item {i}"
        await bot.accept(Inbound("console", f"evt-{i}", f"console:restart:{i}", "console:restart", "u", text))
    if send:
        report("sent", count=send)
    expected = send or len(bot._may_resume)
    reported_started = False
    while len(surface.delivered) < expected:
        if not reported_started and len(surface.started) >= expected:
            report("all_started", last=max(surface.started.values()))
            reported_started = True
        await asyncio.sleep(0.02)
    report("all_delivered", last=max(surface.delivered.values()), count=len(surface.delivered))
    await bot.stop()


async def restart(turns: int = 100, sub_seconds: float = 20.0) -> dict[str, Any]:
    """Build `turns` interrupted turns (SIGKILL an engine process while they wait for slow remote runs), then time
    a fresh engine process from its start until every run that was in flight has been re-attached (the emulator
    logged a request on it), and until every turn is answered."""
    import sqlite3

    scripts = {"proxy": [{"match": "slowproxy", "delay": sub_seconds}], "s1": [{"delay": sub_seconds}]}
    db = temp_db()
    async with emulator_process(scripts) as url, aiohttp.ClientSession() as session:
        log = EmulatorLog(url, session)

        def spawn(**params: Any) -> Any:
            return asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.phases", "engine", json.dumps({"url": url, "db": db, **params}),
                cwd=REPO, stdout=asyncio.subprocess.PIPE,
            )

        # 1. an engine with `turns` turns in flight, each waiting for a slow run; then SIGKILL it
        first = await spawn(send=turns)
        marks = ",".join("?" * len(TERMINAL_RUN_STATUSES))
        query = (f"SELECT turn_id, remote_id FROM runs WHERE status NOT IN ({marks}) AND"
                 " (agent='s1' OR status IN ('queued','in_progress'))")

        def waiting_turns() -> int:
            if not os.path.exists(db):
                return 0
            with sqlite3.connect(db) as conn:
                return len({turn for turn, _ in conn.execute(query, TERMINAL_RUN_STATUSES).fetchall()})

        deadline = time.time() + 60
        while await asyncio.to_thread(waiting_turns) < turns:
            await asyncio.sleep(0.1)
            if time.time() > deadline:
                raise RuntimeError("the interrupted turns never got going")
        first.kill()
        await first.wait()
        with sqlite3.connect(db) as conn:
            active = conn.execute(f"SELECT turn_id, remote_id FROM runs WHERE status NOT IN ({marks})",
                                  TERMINAL_RUN_STATUSES).fetchall()
            states = dict(conn.execute("SELECT state, COUNT(*) FROM turns GROUP BY state").fetchall())
        say(f"restart: killed the engine with {len(active)} runs recorded active; turns by state {states}")
        cursor = len(await log.entries())

        # 2. a fresh engine process: time from its start until every active run is re-attached
        t0 = time.time()
        second = await spawn()
        assert second.stdout is not None
        events: dict[str, dict[str, Any]] = {}
        while "all_delivered" not in events:
            line = await asyncio.wait_for(second.stdout.readline(), sub_seconds + 60)
            if not line:
                raise RuntimeError("the recovering engine exited early")
            event = json.loads(line)
            events[event["event"]] = event
        await second.wait()
        await asyncio.sleep(0.3)
        entries = (await log.entries())[cursor:]
        first_touch: dict[str, float] = {}
        for entry in entries:
            if entry["object_id"] and entry["t_start"] >= t0:
                first_touch.setdefault(entry["object_id"], entry["t_start"])
        per_turn: dict[str, float] = {}
        missing = 0
        for turn_id, remote_id in active:
            if remote_id not in first_touch:
                missing += 1
                continue
            per_turn[turn_id] = max(per_turn.get(turn_id, 0.0), first_touch[remote_id] - t0)
        return {
            "turns": turns, "interrupted_states": states, "active_runs": len(active), "missing": missing,
            "all_running_seconds": max(per_turn.values()),
            "running_p50_seconds": percentile(list(per_turn.values()), 50),
            "imported_seconds": events["imported"]["t"] - t0, "started_seconds": events["started"]["t"] - t0,
            "all_started_seconds": events["all_started"]["last"] - t0 if "all_started" in events else None,
            "all_delivered_seconds": events["all_delivered"]["last"] - t0,
            "delivered": events["all_delivered"]["count"], "sub_seconds": sub_seconds,
        }


async def delegated_cpu(turns: int = 30, subs: int = 4) -> dict[str, Any]:
    """Engine CPU of a delegated turn: follow-up turns one at a time in one conversation, the proxy asking `subs`
    sub-assistants at once, every run streamed, zero provider latency (`benchmarks.profile_turn` profiles it)."""
    text = "ask the team to check the plan"
    async with emulator_process() as url, engine(url, subs=subs) as (bot, surface):
        [conv] = conversations(1)
        for _ in range(3):  # first turn and warm-up
            await surface.send(bot, conv, text)
        cpu = time.process_time()
        for _ in range(turns):
            await surface.send(bot, conv, text)
        return {"turns": turns, "subs": subs, "cpu_ms_per_turn": (time.process_time() - cpu) / turns * 1000}


PHASES = {
    "single": single, "steady": steady, "burst": burst_phase, "throughput": throughput, "fan_out": fan_out,
    "compare": compare, "restart": restart, "engine": engine_process, "delegated_cpu": delegated_cpu,
}


def main() -> None:
    name, params = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(PHASES[name](**params))
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
