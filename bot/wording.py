"""Plain words for the engine's recovery reasons, for progress lines a user reads (`Retrying.reason` is a code such
as `stuck_tool_call`, meant for logs and metrics). Unknown codes get a generic phrase, never the code itself."""

from __future__ import annotations

RETRY_WORDS = {
    "unreachable": "cannot connect to the AI provider",
    "connection": "the connection to the AI provider failed",
    "timeout": "the AI provider did not answer in time",
    "rate_limit": "the AI provider is rate-limiting us",
    "rate_limit_exceeded": "the AI provider is rate-limiting us",
    "server_error": "the AI provider had an error",
    "conflict": "the AI provider reported a conflict",
    "thread_gone": "the conversation was lost at the AI provider; rebuilding it",
    "run_gone": "the work was lost at the AI provider; starting it again",
    "run_lost": "the work was lost at the AI provider; starting it again",
    "stuck_tool_call": "the conversation was stuck on an unanswered step; repairing it",
    "outputs_rejected": "the AI provider refused a teammate's result; starting again",
    "cancelled_by_provider": "the AI provider cancelled the work",
    "expired": "the work expired at the AI provider",
    "queued_too_long": "the AI provider did not start the work",
    "thread_locked": "the conversation is busy with another request",
    "thread_locked_by_unknown_run": "the conversation is busy with another request",
    "stream_dropped": "the connection dropped",
    "stream_dropped_before_created": "the connection dropped",
}
GENERIC = "a hiccup at the AI provider"


def retry_words(reason: str) -> str:
    return RETRY_WORDS.get(reason, GENERIC)
