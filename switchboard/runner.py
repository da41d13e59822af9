"""Start the engine with its adapters: `switchboard run` (every platform enabled in the team file, plus the ops
port) and `switchboard chat` (the terminal). Each returns the process exit code once the adapters have stopped and
the engine has shut down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

from bot.admin_socket import operator_context
from bot.config import ConfigError, TeamConfig
from bot.engine import Bot
from bot.ops import OpsServer
from switchboard.tuning import tuned_process

log = logging.getLogger("switchboard.run")
CONNECT_PROBE_SECONDS = 3.0
STOPPED_TEXT = "stopped. An unfinished answer is kept and resumes when you start the chat again."


class PlatformAdapter(Protocol):
    async def run(self) -> None: ...
    async def connected(self) -> bool: ...


async def _slack_adapter(bot: Bot) -> PlatformAdapter:
    from adapters.slack import SettingsError, SlackAdapter, SlackSettings

    try:
        return SlackAdapter(bot, SlackSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"slack: {exc}") from None


async def _discord_adapter(bot: Bot) -> PlatformAdapter:
    from adapters.discord import DiscordAdapter, DiscordSettings, SettingsError

    try:
        return DiscordAdapter(bot, DiscordSettings.from_env())
    except SettingsError as exc:
        raise ConfigError(f"discord: {exc}") from None


ADAPTER_FACTORIES: dict[str, Callable[[Bot], Awaitable[PlatformAdapter]]] = {
    "slack": _slack_adapter,
    "discord": _discord_adapter,
}


def reload_on_signal(bot: Bot) -> asyncio.Task[None]:
    """SIGHUP: re-read the team file as `switchboard reload` does (audited; a bad file is logged and ignored)."""

    async def reload() -> None:
        result = await bot.command(operator_context("SIGHUP", "", None), "reload")
        (log.info if result.ok else log.error)("%s", result.text)

    task = asyncio.create_task(reload(), name="reload")
    _reloads.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_reloads.discard)
    return task


_reloads: set[asyncio.Task[None]] = set()


async def run_platforms(team: TeamConfig) -> int:
    async with tuned_process():
        return await _run_platforms(team)


async def _run_platforms(team: TeamConfig) -> int:
    enabled = [name for name, cfg in team.platforms.items() if cfg.enabled]
    if not enabled:
        raise ConfigError(
            "slack.enabled / discord.enabled: no platform is enabled in the team file; enable one, "
            "or try `switchboard chat` / `switchboard demo` in the terminal"
        )
    if not team.api_key:
        raise ConfigError("OPENAI_API_KEY: not set; the bot cannot reach the AI provider without it")
    unreachable = await provider_unreachable(team.base_url)
    if unreachable:  # a running bot keeps going: every turn retries in the background, its indicator says so
        log.warning("%s; turns will keep retrying", unreachable)
    bot = Bot.from_config(team)
    adapters = [await ADAPTER_FACTORIES[name](bot) for name in enabled]
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
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_on_signal(bot))
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


async def run_console(team: TeamConfig, conversation: str, jsonl: bool = False) -> int:
    """Chat with the team in this terminal (or through a pipe) on `conversation` until standard input ends.
    Ctrl-C (cancellation) leaves the screen clean and an unfinished turn recorded, to resume at the next start."""
    async with tuned_process():
        return await _run_console(team, conversation, jsonl)


async def _run_console(team: TeamConfig, conversation: str, jsonl: bool) -> int:
    from adapters.console import ConsoleSurface, chat

    unreachable = await provider_unreachable(team.base_url)
    if unreachable:
        raise ProviderUnreachable(unreachable)
    bot = Bot.from_config(team)
    surface = ConsoleSurface(separate=not sys.stdin.isatty(), jsonl=jsonl)
    bot.add_surface(surface)
    await bot.start()
    try:
        return await chat(bot, surface, conversation, settle=bot.idle)
    except asyncio.CancelledError:
        surface.stop()
        print(f"\n{STOPPED_TEXT}", file=sys.stderr, flush=True)
        raise
    finally:
        await bot.stop()


class ProviderUnreachable(ConfigError):
    """Nothing answers at the provider's address; the message says which and what to check."""


async def provider_unreachable(base_url: str | None) -> str | None:
    """Why nothing can be reached at `base_url` (a TCP connection within seconds), or None when something answers.
    The public default (no base URL) is not probed: the SDK's own errors say enough there."""
    if not base_url:
        return None
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        async with asyncio.timeout(CONNECT_PROBE_SECONDS):
            _, writer = await asyncio.open_connection(url.hostname, port)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            why = "timed out"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        else:
            why = (exc.strerror or type(exc).__name__).lower()
        return f"cannot connect to {base_url} ({why}): is the server running? check OPENAI_BASE_URL"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
