"""Several instances soak: 3 Switchboard processes on one PostgreSQL, conversations going on, the provider's random
faults armed, and one instance SIGKILLed every `--interval` seconds and restarted, `--kills` times.

    python -m benchmarks.instances_soak                       # 3 instances, 1,000 conversations, 50 kills, 30 s
    python -m benchmarks.instances_soak --kills 10 --interval 10 --lease-seconds 3   # a quicker look
    python -m benchmarks.instances_soak --kills 50 --interval 4 --lease-seconds 1 --conversations 20 --send-rate 6
                                                              # many takeovers racing new messages

Each instance (this file with `--worker`) runs the real engine with its conversation leases and the console path
of benchmarks/crash_soak_worker.py: messages as JSON lines on stdin handed to `Bot.accept`, replies posted to this
process's console platform over HTTP (which `find_delivery` asks). A message goes to a random live instance and is
sent again (same event id) to another until one acknowledges it. Counts are taken on the platform side: `lost` is an
acknowledged message no posted reply answered; `duplicated` is a turn posted twice or a message answered by two
posted turns. Takeover time: from a kill to the moment each conversation the dead instance owned with unfinished
work has a new owner (polled in the leases table every 50 ms). A failed soak prints what the database holds about
each lost message (its turn, the conversation's other turns) with the workers' log lines about it, and keeps that
log (every worker's engine at INFO) in a temporary directory it names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from benchmarks.common import REPO, percentile
from benchmarks.soak import SoakOptions, arm_random_faults, emulator
from bot.config import RESPONSE_THREADS
from fakes.pg_cluster import PgCluster

INSTANCES = 3
ACK_RESEND_SECONDS = 5.0


@dataclass
class Worker:
    name: str
    proc: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = True


@dataclass
class Tally:
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> the inbound, until acknowledged
    acked: set[str] = field(default_factory=set)
    turns: dict[str, list[str]] = field(default_factory=dict)  # turn id -> its event ids (reported by instances)
    posts: Counter[str] = field(default_factory=Counter)  # turn id -> replies posted on the platform
    takeovers: list[float] = field(default_factory=list)
    kills: int = 0


class Console:
    """The console platform: keeps every reply posted, answers `find` like a platform's history."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.app = web.Application()
        self.app.router.add_post("/deliver", self.deliver)
        self.app.router.add_get("/find", self.find)

    async def deliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.tally.posts[body["turn_id"]] += 1
        return web.json_response({"id": f"post-{body['turn_id']}"})

    async def find(self, request: web.Request) -> web.Response:
        turn = request.query["turn_id"]
        if turn in self.tally.posts:
            return web.json_response({"id": f"post-{turn}"})
        return web.json_response({}, status=404)


async def spawn(name: str, args: argparse.Namespace, db: str, base_url: str, console_url: str, tally: Tally,
                log_file: int) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.instances_soak", "--worker", "--db", db, "--base-url", base_url,
        "--console-url", console_url, "--lease-seconds", str(args.lease_seconds), "--threads", args.threads, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "SWITCHBOARD_INSTANCE": name},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file, limit=1 << 20)
    worker = Worker(name, proc)
    asyncio.get_running_loop().create_task(read_lines(worker, tally))
    return worker


async def read_lines(worker: Worker, tally: Tally) -> None:
    assert worker.proc.stdout is not None
    async for raw in worker.proc.stdout:
        parts = raw.decode().split(" ", 2)
        if parts[0].strip() == "ready":
            worker.ready.set()
        elif parts[0] == "accepted":
            event_id = parts[1].strip()
            tally.acked.add(event_id)
            tally.sent.pop(event_id, None)
        elif parts[0] == "delivered":
            tally.turns[parts[1]] = json.loads(parts[2])
    worker.alive = False


def send(worker: Worker, inbound: dict[str, Any]) -> None:
    assert worker.proc.stdin is not None
    with contextlib.suppress(ConnectionError, RuntimeError):
        worker.proc.stdin.write((json.dumps(inbound) + "\n").encode())


async def kill_and_track(victim: Worker, pool: asyncpg.Pool, tally: Tally, within: float) -> None:
    owned = [r["conversation"] for r in await pool.fetch(
        "SELECT l.conversation FROM leases l WHERE l.owner = $1 AND (EXISTS (SELECT 1 FROM turns t WHERE"
        " t.conversation = l.conversation AND t.state <> 'delivered') OR EXISTS (SELECT 1 FROM inbox i WHERE"
        " i.conversation = l.conversation AND i.state = 'pending'))", victim.name)]
    victim.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.alive = False
    tally.kills += 1
    waiting = set(owned)
    while waiting and time.monotonic() - killed_at < within:
        await asyncio.sleep(0.05)
        rows = await pool.fetch("SELECT conversation, owner FROM leases WHERE conversation = ANY($1::text[])",
                                list(waiting))
        now = time.monotonic()
        for row in rows:
            if row["owner"] != victim.name:
                tally.takeovers.append(now - killed_at)
                waiting.discard(row["conversation"])


@dataclass(frozen=True)
class SoakResult:
    kills: int
    acknowledged: int
    lost: int
    duplicated: int
    never_acknowledged: int
    takeovers: list[float]

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.never_acknowledged == 0


async def run_soak(args: argparse.Namespace) -> SoakResult:
    """The soak with `main`'s options (tests build the namespace with `options(...)`)."""
    rng = random.Random(args.seed)
    tally = Tally()
    cluster = PgCluster.start()
    db = cluster.create_database("soak")
    runner: web.AppRunner | None = None
    workers: list[Worker] = []
    log_dir = tempfile.mkdtemp(prefix="switchboard-soak-")
    log_path = os.path.join(log_dir, "workers.log")
    log_file = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    result: SoakResult | None = None
    try:
        console = Console(tally)
        runner = web.AppRunner(console.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        console_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with emulator(True, args.seed, latency=args.provider_latency) as emu, asyncpg.create_pool(db, min_size=1,
                                                                                         max_size=2) as pool:
            await arm_random_faults(emu, dataclasses.replace(SoakOptions(), rate=args.rate, seed=args.seed))
            generation = 0

            async def new_worker(slot: int) -> Worker:
                nonlocal generation
                generation += 1
                return await spawn(f"i{slot}-g{generation}", args, db, emu.base_url, console_url, tally, log_file)

            workers = [await new_worker(i) for i in range(INSTANCES)]
            await asyncio.gather(*(w.ready.wait() for w in workers))
            conversations = [f"console:soak:c{i}" for i in range(args.conversations)]
            stop_sending = asyncio.Event()

            async def sender() -> None:
                while not stop_sending.is_set():
                    conversation = rng.choice(conversations)
                    text = rng.choice(["hello", "ask the critic about it", "plan with the planner", "research it"])
                    event_id = uuid.uuid4().hex
                    inbound = {"platform": "console", "event_id": event_id, "conversation": conversation,
                               "channel": "console:soak", "user": "u1", "text": f"{text} {event_id[:6]}"}
                    tally.sent[event_id] = {"inbound": inbound, "at": time.monotonic()}
                    live = [w for w in workers if w.alive and w.ready.is_set()]
                    if live:
                        send(rng.choice(live), inbound)
                    await asyncio.sleep(1 / args.send_rate)

            async def resender() -> None:  # a platform redelivers what nobody acknowledged
                while True:
                    await asyncio.sleep(1.0)
                    now = time.monotonic()
                    for pending in list(tally.sent.values()):
                        live = [w for w in workers if w.alive and w.ready.is_set()]
                        if now - pending["at"] > ACK_RESEND_SECONDS and live:
                            pending["at"] = now
                            send(rng.choice(live), pending["inbound"])

            tasks = [asyncio.create_task(sender()), asyncio.create_task(resender())]
            started = time.monotonic()
            for kill in range(args.kills):
                await asyncio.sleep(args.interval)
                slot = rng.randrange(INSTANCES)
                victim = workers[slot]
                workers[slot] = await new_worker(slot)  # restarted at once, as a supervisor would
                await kill_and_track(victim, pool, tally, within=args.lease_seconds * 4)
                await victim.proc.wait()
                print(f"[{time.monotonic() - started:6.0f}s] kill {kill + 1}/{args.kills}: {victim.name}; "
                      f"{len(tally.acked)} acknowledged, {len(tally.posts)} replies posted", flush=True)
            stop_sending.set()
            deadline = time.monotonic() + args.settle
            while time.monotonic() < deadline and (tally.sent or answered(tally) < tally.acked):  # noqa: ASYNC110
                await asyncio.sleep(0.5)  # polling what the reader tasks tally
            for task in tasks:
                task.cancel()
            for worker in workers:
                if worker.proc.stdin is not None:
                    worker.proc.stdin.close()
            await asyncio.gather(*(w.proc.wait() for w in workers))
            injected = len(await emu.injected())
            result = report(tally, injected, args)
            if not result.ok:
                await explain(tally, pool, log_path)
        return result
    finally:
        os.close(log_file)
        if result is not None and result.ok:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"the workers' log is kept: {log_path}")
        for worker in workers:
            if worker.proc.returncode is None:
                worker.proc.kill()
        if runner is not None:
            await runner.cleanup()
        cluster.stop()


def answered(tally: Tally) -> set[str]:
    return {event for turn, events in tally.turns.items() if tally.posts[turn] for event in events}


async def explain(tally: Tally, pool: asyncpg.Pool, log_path: str) -> None:
    """What the database and the workers' log say about each lost message (a failed soak's first clue)."""
    lost = sorted(tally.acked - answered(tally))
    text = await asyncio.to_thread(Path(log_path).read_text, errors="replace")
    lines = text.splitlines()
    print("\nerrors in the workers' log:", *[line for line in lines if " ERROR " in line][:20], sep="\n  ")
    for event_id in lost:
        inbox = await pool.fetchrow("SELECT * FROM inbox WHERE event_id = $1", event_id)
        print(f"\nlost {event_id}: {dict(inbox) if inbox else 'not in the inbox'}")
        if inbox is None:
            continue
        conversation = inbox["conversation"]
        marks = [f"{conversation} ", f"{conversation}'", f"{conversation})", event_id]
        for turn in await pool.fetch("SELECT id, state, reply_kind, delivered_ref, retries, created_at, updated_at"
                                     " FROM turns WHERE conversation = $1 ORDER BY created_at", conversation):
            events = await pool.fetch("SELECT event_id, state FROM inbox WHERE turn_id = $1", turn["id"])
            print(f"  turn {dict(turn)} posts={tally.posts.get(turn['id'], 0)} reported={turn['id'] in tally.turns}"
                  f" events={[(e['event_id'][:8], e['state']) for e in events]}")
            marks.append(turn["id"])
        lease = await pool.fetchrow("SELECT * FROM leases WHERE conversation = $1", conversation)
        print(f"  lease {dict(lease) if lease else None}")
        print("  log:", *[line for line in lines if any(m in line for m in marks)][-60:], sep="\n    ")


def report(tally: Tally, injected: int, args: argparse.Namespace) -> SoakResult:
    posted_for: Counter[str] = Counter(e for turn, events in tally.turns.items() if tally.posts[turn] for e in events)
    lost = tally.acked - set(posted_for)
    duplicated = sum(1 for n in tally.posts.values() if n > 1) + sum(1 for n in posted_for.values() if n > 1)
    takeover = sorted(tally.takeovers)
    print(f"instances {INSTANCES} (threads: {args.threads}), conversations {args.conversations}, kills {tally.kills}, "
          f"provider faults injected {injected}")
    print(f"messages acknowledged {len(tally.acked)}, answered {len(tally.acked) - len(lost)}, lost {len(lost)}, "
          f"duplicated {duplicated}, never acknowledged {len(tally.sent)}")
    if takeover:
        print(f"takeover after a kill (lease {args.lease_seconds:g} s): p50 {percentile(takeover, 50):.2f} s, "
              f"p99 {percentile(takeover, 99):.2f} s, max {takeover[-1]:.2f} s over {len(takeover)} conversations")
    return SoakResult(tally.kills, len(tally.acked), len(lost), duplicated, len(tally.sent), takeover)


async def worker_main(args: argparse.Namespace) -> None:
    from benchmarks.crash_soak_worker import ConsoleWebhook, Reporting
    from bot.config import StorageConfig
    from bot.engine import Bot
    from bot.types import Inbound, InvalidInbound
    from fakes.configs import soak_team

    instance = os.environ.get("SWITCHBOARD_INSTANCE", "")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s {instance} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("switchboard").setLevel(logging.INFO)
    cfg = dataclasses.replace(soak_team(args.base_url, args.db), response_threads=args.threads, storage=StorageConfig(
        lease_seconds=args.lease_seconds, instance=instance))
    bot = Bot.from_config(cfg)
    session = aiohttp.ClientSession()
    bot.add_surface(Reporting(ConsoleWebhook(args.console_url, session), bot))  # type: ignore[arg-type]
    await bot.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        data = json.loads(line)
        try:
            await bot.accept(Inbound(**data))
            print(f"accepted {data['event_id']}", flush=True)  # one write: a SIGKILL cannot cut it
        except InvalidInbound:
            print(f"refused {data['event_id']}", flush=True)
    await bot.idle()
    await bot.stop()
    await session.close()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between kills")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--send-rate", type=float, default=4.0, help="new messages per second")
    parser.add_argument("--rate", type=float, default=0.1, help="provider fault rate (benchmarks/soak.py)")
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait for the last answers")
    parser.add_argument("--provider-latency", type=float, default=0.3, help="seconds per provider request")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", choices=RESPONSE_THREADS, default="chains",
                        help="what the Responses backend's threads are (`[openai] threads`)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--console-url", help=argparse.SUPPRESS)
    return parser


def options(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def main() -> None:
    args = parser().parse_args()
    if args.worker:
        asyncio.run(worker_main(args))
        return
    sys.exit(0 if asyncio.run(run_soak(args)).ok else 1)


if __name__ == "__main__":
    main()
