"""Discord adapter (discord.py 2.7): slash commands, mentions, threads, DMs, thinking indicators, progress.

See README.md in this folder for setting up the Discord application.
"""

from adapters.discord.adapter import DiscordAdapter, DiscordStartError, check_discord, run_discord
from adapters.discord.settings import DiscordSettings, SettingsError
from adapters.discord.surface import DiscordSurface

__all__ = [
    "DiscordAdapter",
    "DiscordSettings",
    "DiscordStartError",
    "DiscordSurface",
    "SettingsError",
    "check_discord",
    "run_discord",
]
