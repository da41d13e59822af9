"""`switchboard init`: write `switchboard.toml` (the packaged example, with the chosen platforms enabled) and a `.env`
template for the secrets, then print the next steps for each platform. Existing files are kept unless `force`;
`--manifest` also writes the Slack app manifest. Nothing is written outside `directory`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchboard import data

PLATFORMS = ("slack", "discord")
TEAM_FILE = "switchboard.toml"
ENV_FILE = ".env"
ENV_FILE_MODE = 0o600  # it holds secrets

ENV_TEMPLATE_HEAD = """\
# Secrets for Switchboard, read at start (variables already in the environment win). Never commit this file.
# The AI provider (https://platform.openai.com/api-keys), or any OpenAI-compatible server:
OPENAI_API_KEY=
# OPENAI_BASE_URL=http://127.0.0.1:8765/v1
"""
ENV_TEMPLATE = {
    "slack": """
# Slack (see the next steps printed by `switchboard init`): Bot User OAuth Token, and for Socket Mode an
# app-level token with connections:write. HTTP mode: SLACK_MODE=http and SLACK_SIGNING_SECRET instead.
SLACK_BOT_TOKEN=
SLACK_APP_TOKEN=
# SLACK_MODE=http
# SLACK_SIGNING_SECRET=
""",
    "discord": """
# Discord: the bot token from the Developer Portal (Bot > Reset Token).
DISCORD_TOKEN=
# DISCORD_GUILD_ID=   # sync slash commands to one server only (instant; for development)
""",
}
NEXT_STEPS = {
    "slack": """\
Slack:
  1. https://api.slack.com/apps > Create New App > From a manifest; paste {manifest}
     (`switchboard init --manifest` writes it here).
  2. Install the app to the workspace; copy the Bot User OAuth Token (xoxb-...) into SLACK_BOT_TOKEN in .env.
  3. Basic Information > App-Level Tokens: create one with connections:write; put it in SLACK_APP_TOKEN.
  4. Admins: a member's ID is in their profile (⋮ > Copy member ID); add it to [slack] admins.""",
    "discord": """\
Discord:
  1. https://discord.com/developers/applications > New Application > Bot > Reset Token; put it in DISCORD_TOKEN.
  2. `switchboard doctor` prints the invite URL with the permissions the bot needs; open it to add the bot.
  3. Admins: turn on Developer Mode (User Settings > Advanced), right-click a user > Copy User ID; add it to
     [discord] admins.""",
}


@dataclass(frozen=True, slots=True)
class InitResult:
    written: tuple[Path, ...]
    kept: tuple[Path, ...]
    platforms: tuple[str, ...]


def enable_platforms(team_text: str, platforms: Sequence[str]) -> str:
    """The example team file with `enabled = true` in the [slack]/[discord] tables named in `platforms`."""
    for name in PLATFORMS:
        value = "true" if name in platforms else "false"
        team_text = re.sub(rf"(?m)^(\[{name}\]\n(?:[^\[].*\n)*?)enabled = (?:true|false)",
                           rf"\g<1>enabled = {value}", team_text)
    return team_text


def env_template(platforms: Sequence[str]) -> str:
    return ENV_TEMPLATE_HEAD + "".join(ENV_TEMPLATE[name] for name in PLATFORMS if name in platforms)


def ask_platforms(ask: Callable[[str], str]) -> tuple[str, ...]:
    """Ask about each platform on a terminal (default: no)."""
    chosen = []
    for name in PLATFORMS:
        answer = ask(f"Enable {name.capitalize()}? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            chosen.append(name)
    return tuple(chosen)


def run_init(directory: Path, platforms: Sequence[str], force: bool = False, manifest: bool = False) -> InitResult:
    """Write the team file, the .env template and (with `manifest`) the Slack manifest into `directory`."""
    files = {
        directory / TEAM_FILE: enable_platforms(data.read(data.EXAMPLE_TEAM), platforms),
        directory / ENV_FILE: env_template(platforms),
    }
    if manifest:
        files[directory / data.SLACK_MANIFEST] = data.read(data.SLACK_MANIFEST)
    written, kept = [], []
    for path, text in files.items():
        if path.exists() and not force:
            kept.append(path)
            continue
        path.write_text(text, encoding="utf-8")
        if path.name == ENV_FILE:
            os.chmod(path, ENV_FILE_MODE)
        written.append(path)
    return InitResult(tuple(written), tuple(kept), tuple(platforms))


def next_steps(result: InitResult, manifest_written: bool) -> str:
    lines = [f"wrote {path}" for path in result.written]
    lines += [f"kept {path} (already there; --force overwrites it)" for path in result.kept]
    lines.append("")
    lines.append("Next steps:")
    lines.append("  Try the team offline now: switchboard demo")
    lines.append(f"  Put your OpenAI key in {ENV_FILE} (OPENAI_API_KEY=...), then: switchboard chat")
    manifest_hint = data.SLACK_MANIFEST if manifest_written else f"the manifest ({data.SLACK_MANIFEST})"
    for name in result.platforms:
        lines.append(NEXT_STEPS[name].format(manifest=manifest_hint))
    if result.platforms:
        lines.append("Then check everything with `switchboard doctor` and start with `switchboard run`.")
    else:
        lines.append("  To reach Slack or Discord: switchboard init --slack / --discord --force "
                     "(or set enabled = true in the team file).")
    return "\n".join(lines)
