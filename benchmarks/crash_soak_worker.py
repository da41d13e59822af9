"""The bot process of the crash soak (benchmarks/crash_soak.py), killed with SIGKILL at random moments.

It runs the real engine with the real Slack adapter (signed HTTP events on a fixed port, and Socket Mode) against
the parent's fake Slack, and the console path: inbound messages as JSON lines on stdin handed to `Bot.accept`,
replies posted to the parent's console platform over HTTP (which `find_delivery` asks, like a platform's history).

It tells the parent on stdout: `ready`, `accepted <event_id>` / `refused <event_id>` (console), `outcome <type>
<channel> <ts> <outcome>` (Slack events), `delivered <turn_id> <event ids as JSON>` (a reply was posted, or found
posted after a restart), `failed <turn_id> <reason>`, `stats <JSON>` (recoveries so far), and `stopped` after a
graceful stop (end of stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import aiohttp

from adapters.slack import SlackAdapter
from benchmarks.soak import FailureLog
from bot.engine import Bot
from bot.types import Inbound, InvalidInbound, Progress, Reply, TurnRef
from fakes.configs import slack_settings, soak_team


def say(*parts: object) -> None:
    # one write of the whole line: a pipe write under PIPE_BUF is atomic, so a SIGKILL cannot cut a line in two
    # (print writes each part on its own when Python runs unbuffered)
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


class ConsoleWebhook:
    """The console path's surface: posts replies to the parent, which keeps them (a terminal's scrollback)."""

    platform = "console"

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        return None

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        payload = {"turn_id": turn.id, "conversation": turn.conversation, "text": reply.text, "kind": reply.kind}
        async with self.session.post(f"{self.url}/deliver", json=payload) as response:
            response.raise_for_status()
            return str((await response.json())["id"])

    async def find_delivery(self, turn: TurnRef) -> str | None:
        async with self.session.get(f"{self.url}/find", params={"turn_id": turn.id}) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return str((await response.json())["id"])


class Reporting:
    """Wraps a surface: tells the parent about every reply posted (or found posted) and the recoveries so far."""

    def __init__(self, inner: Any, bot: Bot) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.bot = bot

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        await self.inner.progress(turn, event)

    async def _report(self, turn: TurnRef) -> None:
        ids = [m.event_id for m in await self.bot.store.inbound_for_turn(turn.id)]
        say("delivered", turn.id, json.dumps(ids))
        say("stats", json.dumps({"recoveries": self.bot.supervisor.recovery_counts, "retries": self.bot.stats.retries}))

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        ref = await self.inner.deliver(turn, reply)
        await self._report(turn)
        return str(ref)

    async def find_delivery(self, turn: TurnRef) -> str | None:
        found = await self.inner.find_delivery(turn)
        if found is not None:
            await self._report(turn)
        return found


class FailureLines(FailureLog):
    def emit(self, record: logging.LogRecord) -> None:
        before = dict(self.reasons)
        super().emit(record)
        for turn_id, reason in self.reasons.items():
            if before.get(turn_id) != reason:
                say("failed", turn_id, reason)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--slack-api-url", required=True)
    parser.add_argument("--slack-http-port", type=int, required=True)
    parser.add_argument("--socket", action="store_true", help="also take Slack events over Socket Mode")
    parser.add_argument("--console-url", required=True)
    parser.add_argument("--backend", default="responses")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="worker %(levelname)s %(name)s: %(message)s")
    engine_log = logging.getLogger("switchboard.engine")
    engine_log.setLevel(logging.INFO)
    engine_log.addHandler(FailureLines())
    engine_log.propagate = False

    # the fake Slack's default credentials (fakes/slack_api.py); the parent runs it at --slack-api-url
    fake = SimpleNamespace(bot_token="xoxb-fake", app_token="xapp-1-fake", signing_secret="fake-signing-secret",
                           api_url=args.slack_api_url)
    cfg = soak_team(args.base_url, args.db, args.backend)
    bot = Bot.from_config(cfg)
    session = aiohttp.ClientSession()
    bot.add_surface(ConsoleWebhook(args.console_url, session))
    socket_adapter = SlackAdapter(bot, slack_settings(fake, "socket")) if args.socket else None  # type: ignore[arg-type]
    http_settings = dataclasses.replace(slack_settings(fake, "http"), http_port=args.slack_http_port)  # type: ignore[arg-type]
    http_adapter = SlackAdapter(bot, http_settings)
    if socket_adapter is not None:
        socket_adapter.deps.surface = http_adapter.surface
        socket_adapter.deps.status = http_adapter.status
        socket_adapter.deps.threads = http_adapter.threads
    for platform, surface in list(bot.surfaces.items()):
        bot.surfaces[platform] = Reporting(surface, bot)  # type: ignore[assignment]

    def observe(event: dict[str, Any], outcome: str) -> None:
        say("outcome", event.get("type"), event.get("channel"), event.get("ts"), outcome)

    for adapter in (http_adapter, socket_adapter):
        if adapter is not None:
            adapter.messages.observers.append(observe)
    await bot.start()
    await http_adapter.start()
    if socket_adapter is not None:
        await socket_adapter.start()
    say("ready")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        data = json.loads(line)
        try:
            await bot.accept(Inbound(**data))
            say("accepted", data["event_id"])
        except InvalidInbound:
            say("refused", data["event_id"])
    await bot.idle()
    for adapter in (socket_adapter, http_adapter):
        if adapter is not None:
            await adapter.stop()
    say("stats", json.dumps({"recoveries": bot.supervisor.recovery_counts, "retries": bot.stats.retries}))
    await bot.stop()
    await session.close()
    say("stopped")


if __name__ == "__main__":
    asyncio.run(main())
