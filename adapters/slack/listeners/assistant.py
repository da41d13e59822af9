"""The agent view (Slack's AI app surface, `agent_view` in manifest.yml): greet a user who opens the app's DM with
suggested prompts.

Agent apps learn of it from `app_home_opened` with `tab == "messages"` (it replaces the legacy
`assistant_thread_started`), and set the prompts for the DM channel without `thread_ts`, which agent apps'
calls must not carry (https://docs.slack.dev/ai/migrating-to-agent-messaging/,
https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts). Messages typed there arrive as
message.im events and are handled by the messages listener like any DM. The prompts are set in the background: the
event's acknowledgement never waits on a Web API call.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from adapters.slack.listeners.deps import Deps
from adapters.slack.retry import error_name

log = logging.getLogger(__name__)

PROMPTS_TITLE = "Ask the team"
MESSAGES_TAB = "messages"


def register(app: AsyncApp, deps: Deps) -> None:
    @app.event("app_home_opened")
    async def on_app_home_opened(event: dict[str, Any]) -> None:
        channel = event.get("channel")
        if event.get("tab") != MESSAGES_TAB or not channel or not deps.settings.suggested_prompts:
            return  # the Home or About tab: nothing to greet
        prompts = [{"title": title, "message": message} for title, message in deps.settings.suggested_prompts]

        async def set_prompts() -> None:
            try:
                await deps.surface.client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, title=PROMPTS_TITLE, prompts=prompts
                )
            except Exception as e:
                log.warning("could not set suggested prompts: %s", error_name(e))

        deps.surface.spawn(set_prompts(), f"slack-prompts-{channel}")
