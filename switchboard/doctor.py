"""`switchboard doctor`: check the team file, the database and every configured credential against its service,
and say what is wrong and how to fix it. Exit code 1 when anything is wrong. Secrets are never printed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from bot.config import ENV_API_KEY, ENV_CONFIG, ConfigError, TeamConfig, load_config
from storage.base import StoreError
from storage.select import redacted, store_for

CHECK_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Finding:
    what: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        mark = "ok " if self.ok else "FAIL"
        return f"[{mark}] {self.what}" + (f": {self.detail}" if self.detail else "")


async def run_doctor(config_path: str | None, env: Mapping[str, str] | None = None) -> list[Finding]:
    env = os.environ if env is None else env
    try:
        team = load_config(config_path, env=env)
    except ConfigError as exc:
        return [Finding("team file", False, f"{exc} (set {ENV_CONFIG} or pass --config)")]
    findings = [Finding("team file", True, f"{1 + len(team.subs)} assistants, backend {team.backend}")]
    findings.append(await _database(team))
    findings.append(await _openai(team))
    if team.platforms.get("slack") and team.platforms["slack"].enabled:
        findings += await _slack(env)
    if team.platforms.get("discord") and team.platforms["discord"].enabled:
        findings += await _discord(env)
    if not any(p.enabled for p in team.platforms.values()):
        findings.append(Finding("platforms", True, "none enabled: only `switchboard chat` will work"))
    return findings


async def _database(team: TeamConfig) -> Finding:
    store = store_for(team.db_path)
    where = redacted(team.db_path)
    try:
        await store.open()
        if not await store.writable():
            return Finding(f"database {where}", False, "cannot write to it: check permissions and free space")
        return Finding(f"database {where}", True, f"schema version {store.schema_version}, writable")
    except StoreError as exc:
        return Finding(f"database {where}", False, str(exc))
    finally:
        await store.close()


async def _openai(team: TeamConfig) -> Finding:
    where = team.base_url or "api.openai.com"
    if not team.api_key:
        return Finding("OpenAI", False, f"{ENV_API_KEY} is not set: export it (a key from the provider's dashboard)")
    client = openai.AsyncOpenAI(api_key=team.api_key, base_url=team.base_url, max_retries=0,
                                timeout=CHECK_TIMEOUT_SECONDS)
    try:
        models = [m.id async for m in client.models.list()]
        return Finding(f"OpenAI at {where}", True, f"key accepted, {len(models)} models visible")
    except openai.AuthenticationError:
        return Finding(f"OpenAI at {where}", False, f"the key was refused: check {ENV_API_KEY}")
    except openai.APIConnectionError:
        return Finding(f"OpenAI at {where}", False, "cannot connect: check OPENAI_BASE_URL and the network")
    except openai.APIError as exc:
        return Finding(f"OpenAI at {where}", False, f"unexpected answer: {type(exc).__name__}")
    finally:
        await client.close()


async def _slack(env: Mapping[str, str]) -> list[Finding]:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    from adapters.slack.settings import SettingsError, SlackSettings

    try:
        settings = SlackSettings.from_env(env)
    except SettingsError as exc:
        return [Finding("Slack settings", False, str(exc))]
    findings = []
    bot_client = AsyncWebClient(token=settings.bot_token, base_url=settings.base_url or AsyncWebClient.BASE_URL)
    try:
        auth = await bot_client.auth_test()
        findings.append(Finding("Slack bot token", True, f"workspace {auth.get('team')}, bot {auth.get('user')}"))
    except SlackApiError as exc:
        error = exc.response.get("error", "error")
        findings.append(Finding("Slack bot token", False, f"auth.test said {error}: reinstall the app and copy the "
                                "Bot User OAuth Token into SLACK_BOT_TOKEN"))
    except OSError as exc:
        findings.append(Finding("Slack bot token", False, f"cannot reach Slack: {type(exc).__name__}"))
    if settings.mode == "socket":
        app_client = AsyncWebClient(token=settings.app_token, base_url=settings.base_url or AsyncWebClient.BASE_URL)
        try:
            await app_client.apps_connections_open(app_token=settings.app_token or "")
            findings.append(Finding("Slack app token (Socket Mode)", True))
        except SlackApiError as exc:
            error = exc.response.get("error", "error")
            findings.append(Finding("Slack app token (Socket Mode)", False, f"{error}: create an app-level token "
                                    "with connections:write and put it in SLACK_APP_TOKEN"))
        except OSError as exc:
            unreachable = f"cannot reach Slack: {type(exc).__name__}"
            findings.append(Finding("Slack app token (Socket Mode)", False, unreachable))
    return findings


async def _discord(env: Mapping[str, str]) -> list[Finding]:
    from adapters.discord import DiscordSettings, SettingsError
    from adapters.discord.adapter import check_discord

    try:
        settings = DiscordSettings.from_env(env)
    except SettingsError as exc:
        return [Finding("Discord settings", False, str(exc))]
    problems = await check_discord(settings)
    if not problems:
        return [Finding("Discord bot token", True)]
    return [Finding("Discord", False, problem) for problem in problems]
