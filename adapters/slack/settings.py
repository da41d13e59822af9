"""Slack adapter settings, read from the environment. Secrets are never shown in repr or logs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from adapters.slack import constants as c

Mode = Literal["socket", "http"]

DEFAULT_SUGGESTED_PROMPTS: tuple[tuple[str, str], ...] = (
    ("What can you do?", "What can you and your team of assistants do?"),
    ("Research a topic", "Research this topic and summarise what you find: "),
    ("Review some text", "Please review the following text and suggest improvements: "),
)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class SlackSettings:
    """Everything the adapter needs. Build with `SlackSettings.from_env()` or directly (tests).

    mode "socket" (default) needs `app_token` (xapp-...); mode "http" needs `signing_secret` and listens on
    `http_host:http_port` at `http_path` for events, slash commands and interactivity alike.
    """

    bot_token: str = field(repr=False)
    mode: Mode = "socket"
    app_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    http_path: str = "/slack/events"
    #: Web API base URL override (tests point it at a fake); None means Slack's own
    base_url: str | None = None
    #: try chat streaming first (falls back to post + update where Slack refuses it)
    streaming: bool = True
    status_refresh_seconds: float = c.STATUS_REFRESH_SECONDS
    update_interval_seconds: float = c.MESSAGE_UPDATE_INTERVAL_SECONDS
    post_interval_seconds: float = c.POST_INTERVAL_SECONDS
    admin_cache_seconds: float = c.ADMIN_CACHE_SECONDS
    #: first backoff before retrying a failed Web API call while delivering (doubles per attempt, full jitter)
    retry_base_seconds: float = c.RETRY_BASE_SECONDS
    suggested_prompts: tuple[tuple[str, str], ...] = DEFAULT_SUGGESTED_PROMPTS

    def __post_init__(self) -> None:
        if not self.bot_token:
            raise SettingsError("SLACK_BOT_TOKEN is missing: copy the Bot User OAuth Token (xoxb-...) of the app")
        if not self.bot_token.startswith("xoxb-"):
            raise SettingsError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        if self.mode not in ("socket", "http"):
            raise SettingsError(f"SLACK_MODE must be 'socket' or 'http', not {self.mode!r}")
        if self.mode == "socket":
            if not self.app_token:
                raise SettingsError(
                    "SLACK_APP_TOKEN is missing: Socket Mode (the default) needs an app-level token (xapp-...) "
                    "with the connections:write scope (Basic Information > App-Level Tokens); "
                    "or set SLACK_MODE=http with SLACK_SIGNING_SECRET"
                )
            if not self.app_token.startswith("xapp-"):
                raise SettingsError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        if self.mode == "http" and not (self.signing_secret or "").strip():
            raise SettingsError(
                "SLACK_SIGNING_SECRET is missing: HTTP mode verifies every request with the app's signing secret "
                "(Basic Information > App Credentials)"
            )
        if not self.http_path.startswith("/"):
            raise SettingsError("SLACK_HTTP_PATH must start with /")
        if len(self.suggested_prompts) > c.SUGGESTED_PROMPTS_MAX:
            raise SettingsError(f"at most {c.SUGGESTED_PROMPTS_MAX} suggested prompts")

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values, for log redaction."""
        return tuple(s for s in (self.bot_token, self.app_token, self.signing_secret) if s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> SlackSettings:
        """Read SLACK_BOT_TOKEN, SLACK_MODE (socket|http), SLACK_APP_TOKEN, SLACK_SIGNING_SECRET,
        SLACK_HTTP_HOST, SLACK_HTTP_PORT, SLACK_HTTP_PATH, SLACK_API_BASE_URL, SLACK_STREAMING (1/0)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "bot_token": env.get("SLACK_BOT_TOKEN", ""),
            "mode": env.get("SLACK_MODE", "socket").strip().lower() or "socket",
            "app_token": env.get("SLACK_APP_TOKEN") or None,
            "signing_secret": env.get("SLACK_SIGNING_SECRET") or None,
        }
        if env.get("SLACK_HTTP_HOST"):
            values["http_host"] = env["SLACK_HTTP_HOST"]
        if env.get("SLACK_HTTP_PORT"):
            try:
                values["http_port"] = int(env["SLACK_HTTP_PORT"])
            except ValueError:
                raise SettingsError(f"SLACK_HTTP_PORT must be a number, not {env['SLACK_HTTP_PORT']!r}") from None
        if env.get("SLACK_HTTP_PATH"):
            values["http_path"] = env["SLACK_HTTP_PATH"]
        if env.get("SLACK_API_BASE_URL"):
            values["base_url"] = env["SLACK_API_BASE_URL"]
        if env.get("SLACK_STREAMING"):
            values["streaming"] = env["SLACK_STREAMING"].strip().lower() not in ("0", "false", "no", "off")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise SettingsError(f"unknown Slack settings: {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
