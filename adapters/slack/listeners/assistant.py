"""The assistant view (Slack's AI app surface): greet a new assistant thread with suggested prompts.

Messages typed in an assistant thread arrive as message.im events in the app's DM, always in a thread, and are
handled by the messages listener like any DM thread (one conversation per thread). The prompts are set in the
background: the event's acknowledgement never waits on a Web API call.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from adapters.slack.listeners.deps import Deps
from adapters.slack.retry import error_name

log = logging.getLogger(__name__)

PROMPTS_TITLE = "Ask the team"


def register(app: AsyncApp, deps: Deps) -> None:
    @app.event("assistant_thread_started")
    async def on_assistant_thread_started(event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts or not deps.settings.suggested_prompts:
            return
        prompts = [{"title": title, "message": message} for title, message in deps.settings.suggested_prompts]

        async def set_prompts() -> None:
            try:
                await deps.surface.client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, thread_ts=thread_ts, title=PROMPTS_TITLE, prompts=prompts
                )
            except Exception as e:
                log.warning("could not set suggested prompts: %s", error_name(e))

        deps.surface.spawn(set_prompts(), f"slack-prompts-{thread_ts}")
