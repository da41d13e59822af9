"""Logging: human-readable by default, JSON lines with `--log-json`; secrets scrubbed from every record,
tracebacks included."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

SECRET_ENV_VARS = (
    "OPENAI_API_KEY",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_CLIENT_SECRET",
    "DISCORD_TOKEN",
)
# Shapes of well-known credentials, for secrets that reach a log without passing through our environment.
SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}|xox[abposr]-[A-Za-z0-9\-]{8,}|xapp-[A-Za-z0-9\-]{8,}"
    r"|[MN][A-Za-z\d_\-]{23,25}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,})"
)
REDACTED = "[redacted]"
# Structured fields the engine attaches with `extra=` (one line per turn); JSON logs carry them as keys.
STRUCTURED_FIELDS = ("turn", "conversation", "outcome", "latency_ms", "retries", "input_tokens", "output_tokens")
MIN_SECRET_LENGTH = 6


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return SECRET_PATTERNS.sub(REDACTED, text)


def current_secrets() -> tuple[str, ...]:
    values = (os.environ.get(name, "") for name in SECRET_ENV_VARS)
    return tuple(v for v in values if len(v) >= MIN_SECRET_LENGTH)


class _Scrubbing(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        secrets = current_secrets()
        if self.as_json:
            payload = {
                "ts": round(record.created, 3),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            for key in STRUCTURED_FIELDS:
                if hasattr(record, key):
                    payload[key] = getattr(record, key)
            if record.exc_info:
                payload["traceback"] = self.formatException(record.exc_info)
            return scrub(json.dumps(payload, ensure_ascii=False), secrets)
        return scrub(super().format(record), secrets)


#: library warnings that say nothing an operator can act on: bolt notes it ignores SLACK_BOT_TOKEN from the
#: environment (we hand it a client), discord.py that voice is unsupported (the bot never joins voice)
LIBRARY_NOISE = (
    "As you gave `client` as well, `token` will be unused.",
    "As `installation_store` or `authorize` has been used, `token` (or SLACK_BOT_TOKEN env variable) will be ignored.",
    "PyNaCl is not installed, voice will NOT be supported",
    "davey is not installed, voice will NOT be supported",
)


def _not_noise(record: logging.LogRecord) -> bool:
    return record.getMessage() not in LIBRARY_NOISE


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Scrubbing(as_json))
    handler.addFilter(_not_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "openai", "aiohttp.access", "slack_bolt", "discord"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
