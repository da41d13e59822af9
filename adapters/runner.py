"""`switchboard run`: the composition root that starts the engine and every platform enabled in the team file.

It lives with the adapters because it is the one place that knows all of them; the engine never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from bot.config import ConfigError, TeamConfig
from bot.engine import Bot
from bot.ops import OpsServer

log = logging.getLogger("switchboard.run")


class Platform(Protocol):
    async def run(self) -> None: ...
    async def connected(self) -> bool: ...


async def _slack(bot: Bot) -> Platform:
    from adapters.slack import SettingsError, SlackAdapter, SlackSettings

    try:
        return SlackAdapter(bot, SlackSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"slack: {exc}") from None


async def _discord(bot: Bot) -> Platform:
    from adapters.discord import DiscordAdapter, DiscordSettings, SettingsError

    try:
        return DiscordAdapter(bot, DiscordSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"discord: {exc}") from None


PLATFORMS = {"slack": _slack, "discord": _discord}


async def run_platforms(team: TeamConfig) -> int:
    enabled = [name for name, cfg in team.platforms.items() if cfg.enabled]
    if not enabled:
        raise ConfigError(
            "slack.enabled / discord.enabled: no platform is enabled in the team file; enable one, "
            "or try `switchboard chat` / `switchboard demo` in the terminal"
        )
    if not team.api_key:
        raise ConfigError("OPENAI_API_KEY: not set; the bot cannot reach the AI provider without it")
    bot = Bot.from_config(team)
    adapters = [await PLATFORMS[name](bot) for name in enabled]
    await bot.start()
    ops: OpsServer | None = None
    if team.ops.port is not None:
        ops = OpsServer(bot, team.ops.host, team.ops.port)
        for name, adapter in zip(enabled, adapters, strict=True):
            ops.add_check(name, adapter.connected)
        await ops.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(a.run(), name=f"platform:{name}") for name, a in zip(enabled, adapters, strict=True)]
    log.info("running %s", ", ".join(enabled))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("platform %s stopped: %s", task.get_name(), task.exception())
            code = 1
    for task in [*tasks, stopper]:
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    if ops is not None:
        await ops.stop()
    await bot.stop()
    return code
