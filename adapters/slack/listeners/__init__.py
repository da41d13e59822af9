"""Bolt listeners, grouped by feature. `register_all` wires them onto an AsyncApp."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from adapters.slack.listeners import assistant, commands, messages
from adapters.slack.listeners.deps import Deps

__all__ = ["Deps", "register_all"]


def register_all(app: AsyncApp, deps: Deps) -> messages.MessageHandler:
    """Register every listener; returns the message handler (its `observers` report each event's outcome)."""
    handler = messages.register(app, deps)
    assistant.register(app, deps)
    commands.register(app, deps)
    return handler
