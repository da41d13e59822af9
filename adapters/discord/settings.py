"""Configuration of the Discord adapter, read from the environment.

| variable | meaning | default |
|---|---|---|
| `DISCORD_TOKEN` | the bot token (required; never logged or printed) | - |
| `DISCORD_GUILD_ID` | sync slash commands to this guild only (instant; for development) | unset: global sync |
| `DISCORD_MESSAGE_CONTENT` | `1` if the privileged Message Content intent is enabled for the app | `0` |
| `DISCORD_ASK_THREADS` | `1`: `/ask` opens a thread where the bot may; `0`: answer in place | `1` |
| `DISCORD_SHARD_COUNT` | total gateway shards of the app, across all instances | unset: one unsharded connection |
| `DISCORD_SHARD_IDS` | the shards this instance connects, e.g. `0,1` (each shard on exactly one instance) | all |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.discord.constants import RETRY_BASE_SECONDS, THREAD_AUTO_ARCHIVE_MINUTES

_TRUE = {"1", "true", "yes", "on"}
MAX_SHARDS = 16_384  # far above what one app needs: a typo guard (discord.com/developers/docs/topics/gateway#sharding)
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """The environment does not describe a usable Discord configuration; the text says what to fix."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be 1 or 0 (got {raw!r})")


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    token: str = field(repr=False)
    guild_id: int | None = None
    message_content: bool = False
    ask_threads: bool = True
    thread_auto_archive_minutes: int = THREAD_AUTO_ARCHIVE_MINUTES
    #: stop re-sending typing after this long even if no reply came (a safety net; the engine always delivers)
    typing_max_seconds: float = 3_600.0
    #: how long discord.py waits for more GUILD_CREATE events before READY (its default; tests shorten it)
    guild_ready_timeout: float = 2.0
    #: first backoff before retrying a failed REST call while delivering (doubles per attempt, full jitter)
    retry_base_seconds: float = RETRY_BASE_SECONDS
    #: gateway sharding across instances: this instance connects `shard_ids` of `shard_count` (None: unsharded)
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    def client_options(self) -> dict[str, object]:
        """The discord.py client options for this instance's shards (none when unsharded)."""
        if self.shard_count is None:
            return {}
        return {"shard_count": self.shard_count,
                "shard_ids": list(self.shard_ids if self.shard_ids is not None else range(self.shard_count))}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DiscordSettings:
        env = os.environ if env is None else env
        token = env.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise SettingsError(
                "DISCORD_TOKEN is not set: copy the bot token from the Discord developer portal "
                "(Application > Bot > Reset Token) into the environment."
            )
        guild_raw = env.get("DISCORD_GUILD_ID", "").strip()
        guild_id: int | None = None
        if guild_raw:
            if not guild_raw.isdigit():
                raise SettingsError(f"DISCORD_GUILD_ID must be a numeric server id (got {guild_raw!r})")
            guild_id = int(guild_raw)
        shard_count, shard_ids = _shards(env)
        return cls(
            token=token,
            guild_id=guild_id,
            message_content=_flag(env, "DISCORD_MESSAGE_CONTENT", False),
            ask_threads=_flag(env, "DISCORD_ASK_THREADS", True),
            shard_count=shard_count,
            shard_ids=shard_ids,
        )


def _shards(env: Mapping[str, str]) -> tuple[int | None, tuple[int, ...] | None]:
    count_raw = env.get("DISCORD_SHARD_COUNT", "").strip()
    ids_raw = env.get("DISCORD_SHARD_IDS", "").strip()
    if not count_raw:
        if ids_raw:
            raise SettingsError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the app's total number of shards)")
        return None, None
    if not count_raw.isdigit() or not 1 <= int(count_raw) <= MAX_SHARDS:
        raise SettingsError(f"DISCORD_SHARD_COUNT must be a whole number from 1 to {MAX_SHARDS} (got {count_raw!r})")
    count = int(count_raw)
    if not ids_raw:
        return count, None
    parts = [p.strip() for p in ids_raw.split(",")]
    if not all(p.isdigit() and int(p) < count for p in parts) or len(set(parts)) != len(parts):
        raise SettingsError(
            f"DISCORD_SHARD_IDS must list distinct shard numbers from 0 to {count - 1}, e.g. 0,1 (got {ids_raw!r})")
    return count, tuple(sorted(int(p) for p in parts))
