"""Slack adapter: Slack events to `Inbound`s for the engine, and the engine's progress and replies back to Slack.

    from adapters.slack import SlackAdapter, SlackSettings
    adapter = SlackAdapter(bot, SlackSettings.from_env())
    await adapter.run()

See adapters/slack/README.md for creating the Slack app from manifest.yml.
"""

from adapters.slack.app import SlackAdapter
from adapters.slack.keys import ThreadRegistry
from adapters.slack.settings import SettingsError, SlackSettings
from adapters.slack.surface import SlackSurface

__all__ = ["SettingsError", "SlackAdapter", "SlackSettings", "SlackSurface", "ThreadRegistry"]
