"""`switchboard doctor`: check the team file, the database and every configured credential against its service,
and say what is wrong and how to fix it. Exit code 1 when anything is wrong. Secrets are never printed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from bot.backends.providers import make_client
from bot.config import ENV_API_KEY, ENV_BASE_URL, ENV_CONFIG, ConfigError, Provider, TeamConfig, load_config
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
        # A missing key is reported too, so every missing piece shows at once. Nothing is contacted without a valid
        # team file: its [openai] base_url may point somewhere else than the public API.
        findings = [Finding("team file", False, f"{exc} (set {ENV_CONFIG} or pass --config)")]
        if not env.get(ENV_API_KEY):
            findings.append(await _check_openai(None, None))
        return findings
    findings = [Finding("team file", True, f"{1 + len(team.subs)} assistants, backend {team.backend}")]
    findings.append(await _database(team))
    for provider in team.providers().values():  # every distinct provider of the team, once
        findings.append(await _provider(team, provider))
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


async def _check_openai(api_key: str | None, base_url: str | None) -> Finding:
    where = base_url or "api.openai.com"
    if not api_key:
        return Finding("OpenAI", False, f"{ENV_API_KEY} is not set: put it in .env or export it (a key from the "
                       "provider's dashboard)")
    client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=CHECK_TIMEOUT_SECONDS)
    try:
        models = [m.id async for m in client.models.list()]
        return Finding(f"OpenAI at {where}", True, f"key accepted, {len(models)} models visible")
    except openai.AuthenticationError:
        return Finding(f"OpenAI at {where}", False, f"the key was refused: check {ENV_API_KEY}")
    except openai.APIConnectionError:
        return Finding(f"OpenAI at {where}", False, f"cannot connect to {where}: check {ENV_BASE_URL} and the network")
    except openai.APIError as exc:
        return Finding(f"OpenAI at {where}", False, f"unexpected answer: {type(exc).__name__}")
    finally:
        await client.close()


async def _provider(team: TeamConfig, provider: Provider) -> Finding:
    """Ask the provider for its models with the key meant for it: the key, the URL and the network in one call."""
    users = [a.name for a in team.members if team.provider_of(a).key == provider.key]
    what = f"OpenAI-compatible {provider.backend} at {provider.where} (for {', '.join(users)})"
    key = team.key_for(provider)
    env_name = provider.api_key_env
    if not key:
        return Finding(what, False, f"{env_name} is not set: export it (a key from the provider's dashboard"
                                    "; a local server that needs none takes any value)")
    client = make_client(provider, key)
    try:
        models = [m.id async for m in client.with_options(timeout=CHECK_TIMEOUT_SECONDS).models.list()]
        return Finding(what, True, f"key accepted, {len(models)} models visible")
    except openai.AuthenticationError:
        return Finding(what, False, f"the key was refused: check {env_name}")
    except openai.NotFoundError:  # e.g. an Azure deployment URL, which lists no models: reachable, key unproven
        return Finding(what, True, "reachable (it lists no models here, so the key is checked on the first run)")
    except openai.APIConnectionError:
        setting = ENV_BASE_URL if provider.base_url == team.base_url else "base_url"
        return Finding(what, False, f"cannot connect to {provider.where}: check {setting} and the network")
    except openai.APIError as exc:
        return Finding(what, False, f"unexpected answer: {type(exc).__name__}")
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
    from adapters.discord.adapter import inspect_discord

    try:
        settings = DiscordSettings.from_env(env)
    except SettingsError as exc:
        return [Finding("Discord settings", False, str(exc))]
    problems, invite = await inspect_discord(settings)
    if not problems:
        return [Finding("Discord bot token", True, f"invite the bot with {invite}" if invite else "")]
    return [Finding("Discord", False, problem) for problem in problems]
