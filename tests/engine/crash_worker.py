"""A Switchboard engine in its own process, for the crash tests: reads inbound messages as JSON lines on stdin,
delivers replies to a fake platform over HTTP, and is killed with SIGKILL by the test at chosen moments."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys

import aiohttp

from bot.context import is_fork_path, parse_context
from bot.engine import Bot, make_backend
from bot.types import Inbound, Progress, Reply, TurnRef
from storage.base import RunRecord
from storage.handoffs import Applied, Transfer
from storage.sqlite import SQLiteStore
from tests.engine.harness import handoff_team, team


class WebhookSurface:
    """Delivers to the test's fake platform; `find_delivery` asks it, like Slack metadata or Discord nonces."""

    platform = "console"

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        return None

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        assert self.session is not None
        payload = {"turn_id": turn.id, "text": reply.text, "kind": reply.kind}
        async with self.session.post(f"{self.url}/deliver", json=payload) as response:
            response.raise_for_status()
            return (await response.json())["id"]

    async def find_delivery(self, turn: TurnRef) -> str | None:
        assert self.session is not None
        async with self.session.get(f"{self.url}/find", params={"turn_id": turn.id}) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return (await response.json())["id"]


class AnnouncingStore(SQLiteStore):
    """Tells the test (on stdout) the moment a run is durably recorded, so it can kill at exactly that point."""

    async def record_run(self, run: RunRecord) -> None:
        await super().record_run(run)
        print(f"recorded {run.agent} {run.remote_id}", flush=True)

    stall: str = ""  # handoffs: "before_transfer" / "after_transfer" hang there (the test kills the process)

    async def apply_transfer(self, transfer: Transfer, max_per_turn: int) -> Applied:
        if self.stall == "before_transfer":
            print(f"transferring to {transfer.to_agent}", flush=True)
            await asyncio.Event().wait()
        applied = await super().apply_transfer(transfer, max_per_turn)
        print(f"transfer {applied} to {transfer.to_agent}", flush=True)
        if self.stall == "after_transfer":
            await asyncio.Event().wait()
        return applied

    hold_after_fork = False  # stall for good once a forked thread is recorded: the test kills right there

    async def set_sub_thread(self, key: str, generation: int, path: str, thread_id: str) -> None:
        await super().set_sub_thread(key, generation, path, thread_id)
        print(f"thread {path} {thread_id}", flush=True)
        if self.hold_after_fork and is_fork_path(path):
            await asyncio.Event().wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--platform-url", required=True)
    parser.add_argument("--backend", default="responses")
    parser.add_argument("--team", choices=("delegation", "handoffs"), default="delegation")
    parser.add_argument("--stall", choices=("", "before_transfer", "after_transfer"), default="")
    parser.add_argument("--critic-context", default="brief")  # the critic's context mode (bot.context)
    parser.add_argument("--hold-after-fork", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="worker %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    make_team = handoff_team if args.team == "handoffs" else team
    cfg = make_team(args.base_url, args.db, backend=args.backend)
    mode = parse_context(args.critic_context)
    cfg = dataclasses.replace(cfg, subs=tuple(dataclasses.replace(s, context=mode) if s.name == "critic" else s
                                              for s in cfg.subs))
    surface = WebhookSurface(args.platform_url)
    surface.session = aiohttp.ClientSession()
    store = AnnouncingStore(cfg.db_path)
    store.hold_after_fork = args.hold_after_fork
    store.stall = args.stall
    bot = Bot(cfg, store, make_backend(cfg))
    bot.add_surface(surface)
    await bot.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        data = json.loads(line)
        accepted = await bot.accept(Inbound(**data))
        print(f"accepted {accepted.event_id}", flush=True)
    await bot.idle()
    await bot.stop()
    await surface.session.close()


if __name__ == "__main__":
    asyncio.run(main())
