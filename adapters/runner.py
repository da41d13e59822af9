"""`switchboard run`: the composition root that starts the engine and every platform enabled in the team file.

It lives with the adapters because it is the one place that knows all of them; the engine never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from bot.config import ConfigError, TeamConfig
from bot.engine import Bot

log = logging.getLogger("switchboard.run")


async def _slack(bot: Bot) -> Callable[[], Awaitable[None]]:
    from adapters.slack import SettingsError, SlackAdapter, SlackSettings

    try:
        adapter = SlackAdapter(bot, SlackSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"slack: {exc}") from None
    return adapter.run


async def _discord(bot: Bot) -> Callable[[], Awaitable[None]]:
    from adapters.discord import DiscordAdapter, DiscordSettings, SettingsError

    try:
        adapter = DiscordAdapter(bot, DiscordSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"discord: {exc}") from None
    return adapter.run


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
    runners = [await PLATFORMS[name](bot) for name in enabled]
    await bot.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(run(), name=f"platform:{name}") for name, run in zip(enabled, runners, strict=True)]
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
    await bot.stop()
    return code
