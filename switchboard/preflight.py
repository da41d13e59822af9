"""What `switchboard run` needs before it starts, checked all at once: the team file, an enabled platform, the
OpenAI key and each enabled platform's secrets. `missing_pieces` returns one line per problem (empty: ready), so
the operator fixes everything in one go instead of meeting the problems one start at a time.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import ENV_API_KEY, ConfigError, TeamConfig, load_config

ENV_FILE = ".env"
SLACK_SECRETS = {"socket": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"), "http": ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")}
DISCORD_SECRETS = ("DISCORD_TOKEN",)


def missing_pieces(config_path: str | None, env: Mapping[str, str]) -> tuple[TeamConfig | None, list[str]]:
    """The team (when its file is valid) and every reason `run` cannot start yet, each with what to do."""
    problems: list[str] = []
    team: TeamConfig | None = None
    try:
        team = load_config(config_path, env=env)
    except ConfigError as exc:
        problems.append(f"team file: {exc}")
    if team is not None and not any(p.enabled for p in team.platforms.values()):
        problems.append("no platform is enabled: set `enabled = true` under [slack] or [discord] in the team file "
                        "(or run `switchboard init --slack` / `--discord`); `switchboard chat` and "
                        "`switchboard demo` work without one")
    if not env.get(ENV_API_KEY):
        problems.append(f"{ENV_API_KEY} is not set: put it in {ENV_FILE} or export it")
    if team is not None:
        problems += _platform_secrets(team, env)
    return (team if not problems else None), problems


def _platform_secrets(team: TeamConfig, env: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    if (slack := team.platforms.get("slack")) and slack.enabled:
        mode = env.get("SLACK_MODE", "socket").strip().lower() or "socket"
        missing = [name for name in SLACK_SECRETS.get(mode, SLACK_SECRETS["socket"]) if not env.get(name)]
        problems += [f"slack: {name} is not set: put it in {ENV_FILE} or export it (see `switchboard init`)"
                     for name in missing]
        if not missing:
            from adapters.slack import SettingsError, SlackSettings

            try:
                SlackSettings.from_env(env)
            except SettingsError as exc:
                problems.append(f"slack: {exc}")
    if (discord := team.platforms.get("discord")) and discord.enabled:
        missing = [name for name in DISCORD_SECRETS if not env.get(name)]
        problems += [f"discord: {name} is not set: put it in {ENV_FILE} or export it (see `switchboard init`)"
                     for name in missing]
        if not missing:
            from adapters.discord import DiscordSettings
            from adapters.discord import SettingsError as DiscordSettingsError

            try:
                DiscordSettings.from_env(env)
            except DiscordSettingsError as exc:
                problems.append(f"discord: {exc}")
    return problems
