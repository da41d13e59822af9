"""Crash soak: the bot process is killed with SIGKILL at random moments and restarted, while conversations go on.

    python -m benchmarks.crash_soak --kills 60 --messages 600 --seed 1 [--rate 0.1]

The bot (benchmarks/crash_soak_worker.py) runs the real engine and the real Slack adapter (signed HTTP events on a
fixed port, and Socket Mode) plus the console path (`Bot.accept`, messages as JSON lines on its stdin). This
process plays the platforms (the fake Slack, a console "scrollback" the worker posts replies to) and the provider
(the emulator, scripted so sub-assistants take a moment, with random faults at `--rate`), and kills the worker
after a random 0-`--max-gap` seconds of each life, `--kills` times at least, then lets the last one finish.

A platform redelivers what the bot did not acknowledge, as Slack does (HTTP retries with X-Slack-Retry-Num,
Socket Mode envelopes pushed again); the console resends a line the bot did not confirm. Counts come from the
platforms' side as in benchmarks/soak.py (see its docstring for `lost` and `duplicated`).
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
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.soak import (
    ConversationPlan,
    SentMessage,
    SoakOptions,
    SoakReport,
    arm_random_faults,
    console_deliveries,
    count,
    emulator,
    incomplete_rule,
    plan_conversations,
    provider_calls,
    read_db,
    slack_deliveries,
    tally_injected,
)
from fakes.configs import SUBS
from fakes.console import Posted
from fakes.slack_api import FakeSlack

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 30.0
ACK_TIMEOUT = 3.0

log = logging.getLogger("switchboard.crash_soak")


@dataclass
class CrashOptions:
    kills: int = 60
    messages: int = 600
    seed: int = 1
    rate: float = 0.1
    conversations: int = 24
    concurrency: int = 8
    max_gap: float = 1.5  # a worker lives 0..max_gap seconds after it said ready
    sub_seconds: float = 0.3  # how long a sub-assistant works (real time)
    socket_mode: bool = True
    backend: str = "responses"
    emulator_process: bool = False


# ---- the console platform: keeps what the bot printed ---------------------------------------------------------


class ConsoleScrollback:
    def __init__(self) -> None:
        self.posted: list[Posted] = []

    async def deliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.posted.append(Posted(body["turn_id"], body["conversation"], body["kind"], body["text"]))
        return web.json_response({"id": f"line{len(self.posted)}"})

    async def find(self, request: web.Request) -> web.Response:
        turn_id = request.query["turn_id"]
        for i, posted in enumerate(self.posted):
            if posted.turn_id == turn_id:
                return web.json_response({"id": f"line{i + 1}"})
        return web.json_response({"error": "not found"}, status=404)


@contextlib.asynccontextmanager
async def serve_console(scrollback: ConsoleScrollback) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/deliver", scrollback.deliver)
    app.router.add_get("/find", scrollback.find)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the worker process ------------------------------------------------------------------------------------------


class Worker:
    """Starts, watches and kills the bot process; collects what it reports across lives."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.life = 0
        self.kills = 0
        self.ready = asyncio.Event()
        self.changed = asyncio.Condition()
        self.accepted: set[str] = set()
        self.refused: set[str] = set()
        self.delivered: set[str] = set()
        self.outcomes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self.failures: dict[str, str] = {}
        self.stats: dict[int, dict[str, Any]] = {}
        self.stopped = False
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self.stderr_tail: list[str] = []

    async def start(self) -> None:
        self.life += 1
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.crash_soak_worker", *self.args, cwd=REPO,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._reader = asyncio.create_task(self._read(self.proc, self.life))
        self._stderr = asyncio.create_task(self._read_stderr(self.proc))
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.ready.wait()
        except TimeoutError:
            raise RuntimeError("the worker did not get ready:\n" + "\n".join(self.stderr_tail[-30:])) from None

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())
            del self.stderr_tail[:-200]

    async def _read(self, proc: asyncio.subprocess.Process, life: int) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if not line.endswith(b"\n"):  # cut by the SIGKILL: the next life reports that reply again
                break
            word, _, rest = line.decode().strip().partition(" ")
            if word == "ready":
                self.ready.set()
            elif word == "accepted":
                self.accepted.add(rest)
            elif word == "refused":
                self.refused.add(rest)
            elif word == "delivered":
                _, _, ids = rest.partition(" ")
                self.delivered.update(json.loads(ids))
            elif word == "outcome":
                kind, channel, ts, outcome = rest.split(" ")
                self.outcomes[(kind, channel, ts)].append(outcome)
            elif word == "failed":
                turn_id, _, reason = rest.partition(" ")
                self.failures[turn_id] = reason
            elif word == "stats":
                self.stats[life] = json.loads(rest)
            elif word == "stopped":
                self.stopped = True
            async with self.changed:
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    async def wait_until(self, predicate: Any, within: float) -> bool:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            return False
        return True

    async def kill(self) -> None:
        assert self.proc is not None
        self.ready.clear()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                await task
        self.kills += 1

    async def write(self, data: dict[str, Any]) -> bool:
        """Send a console line to the current life; False when it is not alive to take it."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None or not self.ready.is_set():
            return False
        try:
            proc.stdin.write((json.dumps(data) + "\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def stop(self) -> None:
        """A graceful end: close stdin, the worker lets its turns finish and exits."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        await self.wait_until(lambda: self.stopped, 120)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def recoveries(self) -> tuple[dict[str, int], int]:
        total: dict[str, int] = defaultdict(int)
        retries = 0
        for stats in self.stats.values():
            for reason, n in stats.get("recoveries", {}).items():
                total[reason] += n
            retries += int(stats.get("retries", 0))
        return dict(total), retries


# ---- sending, the way each platform redelivers ---------------------------------------------------------------


class Sender:
    def __init__(self, worker: Worker, fake: FakeSlack, http_port: int, session: aiohttp.ClientSession,
                 socket_mode: bool) -> None:
        self.worker = worker
        self.fake = fake
        self.http_port = http_port
        self.session = session
        self.socket_mode = socket_mode
        self.sent: list[SentMessage] = []
        self.redeliveries = 0
        self.problems: list[str] = []

    async def _alive(self) -> None:
        await self.worker.ready.wait()

    async def console(self, plan: ConversationPlan, text: str) -> SentMessage:
        message = SentMessage(f"console-{uuid.uuid4().hex[:16]}", "console", plan.tag, text, "console")
        self.sent.append(message)
        data = {"platform": "console", "event_id": message.event_id, "conversation": f"console:crash:{plan.tag}",
                "channel": "console:crash", "user": plan.user, "text": text}
        ids = {message.event_id}
        for attempt in range(100):
            await self._alive()
            life = self.worker.life
            if attempt:
                self.redeliveries += 1
            if not await self.worker.write(data):
                continue
            confirmed = await self.worker.wait_until(
                lambda life=life: bool(ids & (self.worker.accepted | self.worker.refused))
                or self.worker.life != life or not self.worker.ready.is_set(), within=10,
            )
            if confirmed and ids & (self.worker.accepted | self.worker.refused):
                message.outcome = "accepted" if ids & self.worker.accepted else "refused"
                return message
        message.outcome = "error"
        return message

    async def slack(self, plan: ConversationPlan, text: str, root_ts: str | None) -> SentMessage:
        fake = self.fake
        as_mention = plan.place == "channel" and root_ts is None
        posted = f"<@{fake.bot_user_id}> {text}" if as_mention else text
        msg = fake.add_user_message(plan.channel, plan.user, posted, root_ts)
        event: dict[str, Any] = {"type": "app_mention" if as_mention else "message", "user": plan.user,
                                 "text": posted, "ts": msg.ts, "channel": plan.channel, "event_ts": msg.ts,
                                 "team": fake.team_id}
        if not as_mention:
            event["channel_type"] = "im" if plan.place == "dm" else "channel"
        if root_ts is not None:
            event["thread_ts"] = root_ts
        event_id = f"Ev{uuid.uuid4().hex[:12].upper()}"
        message = SentMessage(event_id, plan.entry, plan.tag, text, plan.channel, msg.ts)
        self.sent.append(message)
        body = fake.event_body(event, event_id=event_id)
        for attempt in range(100):
            await self._alive()
            if attempt:
                self.redeliveries += 1
            if await self._deliver(plan.entry, body, attempt):
                message.outcome = "acknowledged"
                key = (event["type"], plan.channel, msg.ts)
                if await self.worker.wait_until(lambda key=key: bool(self.worker.outcomes[key]), within=5):
                    message.outcome = self.worker.outcomes[key][0]
                return message
        message.outcome = "error"
        return message

    async def _deliver(self, entry: str, body: dict[str, Any], attempt: int) -> bool:
        """One delivery attempt; True when the bot acknowledged it (Slack then forgets the event)."""
        if entry == "slack_socket":
            try:
                envelope = await self.fake.push_envelope(
                    "events_api", body, retry_attempt=attempt or None, retry_reason="timeout" if attempt else None
                )
                await self.fake.wait_ack(envelope, within=ACK_TIMEOUT)
                return True
            except (AssertionError, ConnectionError, RuntimeError):
                return False
        raw = json.dumps(body)
        headers = {"Content-Type": "application/json", **self.fake.sign(raw)}
        if attempt:
            headers["X-Slack-Retry-Num"] = str(attempt)
            headers["X-Slack-Retry-Reason"] = "http_error"
        try:
            async with asyncio.timeout(ACK_TIMEOUT), self.session.post(
                f"http://127.0.0.1:{self.http_port}/slack/events", data=raw, headers=headers
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            return False

    async def conversation(self, plan: ConversationPlan, gate: asyncio.Semaphore) -> None:
        root_ts: str | None = None
        async with gate:
            for index, burst in enumerate(plan.bursts):
                if plan.entry == "console":
                    messages = await asyncio.gather(*(self.console(plan, t) for t in burst))
                elif plan.place == "channel" and index == 0:
                    first = await self.slack(plan, burst[0], None)
                    root_ts = first.ts
                    messages = [first]
                else:
                    messages = await asyncio.gather(*(self.slack(plan, t, root_ts) for t in burst))
                ids = {m.event_id for m in messages if m.outcome not in ("refused", "ignored", "error")}
                answered = await self.worker.wait_until(lambda ids=ids: ids <= self.worker.delivered, DELIVERY_TIMEOUT)
                if ids and not answered:
                    self.problems.append(f"{plan.tag}: burst {index} not answered within {DELIVERY_TIMEOUT:g} s")


# ---- the run ------------------------------------------------------------------------------------------------------


@dataclass
class CrashReport(SoakReport):
    lives: int = 0
    redeliveries: int = 0
    kill_gaps: list[float] = field(default_factory=list)


async def killer(worker: Worker, options: CrashOptions, rng: random.Random, senders_done: asyncio.Event) -> list[float]:
    gaps = []
    while worker.kills < options.kills or not senders_done.is_set():
        await worker.ready.wait()
        gap = rng.uniform(0.0, options.max_gap)
        await asyncio.sleep(gap)  # the random moment of this life
        await worker.kill()
        gaps.append(gap)
        await worker.start()
    return gaps


async def run_crash_soak(options: CrashOptions) -> CrashReport:
    rng = random.Random(options.seed)
    soak_options = SoakOptions(messages=options.messages, rate=options.rate, seed=options.seed,
                               conversations=options.conversations, concurrency=options.concurrency,
                               backend=options.backend,
                               entry_points=("slack_http", "slack_socket", "console") if options.socket_mode
                               else ("slack_http", "console"))
    report = CrashReport(options=dataclasses.asdict(options))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="switchboard-crash-") as folder:
        db_path = str(Path(folder) / "crash.db")
        scrollback = ConsoleScrollback()
        async with (
            emulator(not options.emulator_process, options.seed) as emu,
            FakeSlack() as fake,
            serve_console(scrollback) as console_url,
            aiohttp.ClientSession() as session,
        ):
            await arm_random_faults(emu, soak_options)
            for sub in SUBS:
                await emu.set_script(sub, [{"delay": options.sub_seconds}])
            await emu.set_script("proxy", [incomplete_rule(), {"delay": options.sub_seconds / 3}])
            http_port = free_port()
            args = ["--db", db_path, "--base-url", emu.base_url, "--slack-api-url", fake.api_url,
                    "--slack-http-port", str(http_port), "--console-url", console_url, "--backend", options.backend]
            if options.socket_mode:
                args.append("--socket")
            worker = Worker(args)
            await worker.start()
            sender = Sender(worker, fake, http_port, session, options.socket_mode)
            senders_done = asyncio.Event()
            gate = asyncio.Semaphore(options.concurrency)
            plans = plan_conversations(soak_options, rng)

            async def send_all() -> None:
                await asyncio.gather(*(sender.conversation(plan, gate) for plan in plans))
                senders_done.set()

            async with asyncio.TaskGroup() as group:
                kills = group.create_task(killer(worker, options, rng, senders_done))
                group.create_task(send_all())
            report.kill_gaps = kills.result()
            everything = {m.event_id for m in sender.sent if m.outcome not in ("refused", "ignored", "error")}
            if not await worker.wait_until(lambda: everything <= worker.delivered, DELIVERY_TIMEOUT * 2):
                report.problems.append("some messages were still unanswered at the end")
            await worker.stop()
            injected = await emu.injected()
            counters = await emu.counters()
            await emu.stop_faults()
            deliveries = console_deliveries(scrollback.posted)
            slack_found, stray = slack_deliveries(fake)
            deliveries.update(slack_found)
            report.stray_messages = stray
            report.recoveries_by_reason, report.retries = worker.recoveries()
            report.injected_by_kind = dict(tally_injected(injected))
            report.faulted_calls = len(injected)
            report.provider_calls = provider_calls(counters)
            report.kills = worker.kills
            report.lives = worker.life
            report.redeliveries = sender.redeliveries
            report.problems += sender.problems
        count(report, sender.sent, read_db(db_path), deliveries, worker.failures)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs at least (default 60)")
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.1, help="provider fault rate besides the kills")
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-gap", type=float, default=1.5, help="a worker lives 0..this many seconds")
    parser.add_argument("--sub-seconds", type=float, default=0.3, help="how long a sub-assistant works")
    parser.add_argument("--no-socket", action="store_true", help="Slack over HTTP only")
    parser.add_argument("--backend", default="responses", choices=["responses", "assistants"])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    options = CrashOptions(kills=args.kills, messages=args.messages, seed=args.seed, rate=args.rate,
                           conversations=args.conversations, concurrency=args.concurrency, max_gap=args.max_gap,
                           sub_seconds=args.sub_seconds, socket_mode=not args.no_socket, backend=args.backend)
    report = asyncio.run(run_crash_soak(options))
    for line in report.lines():
        print(line, flush=True)
    print(f"worker lives             {report.lives}; redeliveries by the platforms {report.redeliveries}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
    missed = report.targets(min_messages=0, min_share=0.0, min_kills=50 if args.kills >= 50 else 0)
    for line in missed:
        print(f"TARGET MISSED: {line}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
