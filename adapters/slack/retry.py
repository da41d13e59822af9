"""What a failed Slack Web API call means, and retrying the ones worth retrying.

Every failure falls into one class (`classify`):

- ``transient``: HTTP 429 (its Retry-After is honoured), HTTP 5xx, Slack's internal_error / fatal_error /
  service_unavailable / request_timeout / ratelimited, a dropped connection, a timeout. Worth retrying after a
  backoff. The SDK's retry handlers (app.make_client) already retried most of these a few times; `with_retries`
  is the layer above, with `bot.backoff` full-jitter delays.
- ``too_long``: msg_too_long. The same text fails again: split it smaller.
- ``elsewhere``: this reply cannot be posted in this channel (not_in_channel, channel_not_found, is_archived,
  restricted_action...) or thread (thread_not_found, cannot_reply_to_message...): deliver it another way.
- ``permanent``: anything else (a bad argument, a dead token): retrying the same call cannot help.

Error names are those of the methods' reference pages (https://docs.slack.dev/reference/methods/, "Errors").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from adapters.slack import constants as c
from bot.backoff import retrying

log = logging.getLogger(__name__)

T = TypeVar("T")
Failure = Literal["transient", "too_long", "elsewhere", "permanent"]

#: "Common errors" every method can return that say "try again later"
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited", "rate_limited"}
)
#: the reply cannot go into this thread (but may go into its channel)
THREAD_ERRORS = frozenset(
    {"thread_not_found", "invalid_thread_ts", "cannot_reply_to_message", "restricted_action_thread_locked",
     "restricted_action_non_threadable_channel"}
)
#: the reply cannot go into this channel at all
CHANNEL_ERRORS = frozenset(
    {"not_in_channel", "channel_not_found", "is_archived", "restricted_action", "restricted_action_read_only_channel",
     "restricted_action_thread_only_channel", "ekm_access_denied", "team_access_not_granted", "access_denied",
     "messages_tab_disabled"}
)
TOO_LONG_ERRORS = frozenset({"msg_too_long"})
#: a message to remove is already gone (chat.delete / chat.update)
GONE_ERRORS = frozenset({"message_not_found"})


def error_name(e: BaseException) -> str:
    """Slack's `error` field, else `http_<status>` for a non-Slack answer, else the exception's type."""
    if isinstance(e, SlackApiError):
        response = e.response
        name = response.get("error") if isinstance(response.data, dict) else None
        if name:
            return str(name)
        return f"http_{response.status_code}"
    return type(e).__name__


def classify(e: BaseException) -> Failure:
    if isinstance(e, SlackApiError):
        name = error_name(e)
        status = e.response.status_code
        if status == 429 or status >= 500 or name in TRANSIENT_ERRORS:
            return "transient"
        if name in TOO_LONG_ERRORS:
            return "too_long"
        if name in CHANNEL_ERRORS or name in THREAD_ERRORS:
            return "elsewhere"
        return "permanent"
    if isinstance(e, aiohttp.ClientError | OSError | TimeoutError):
        return "transient"
    return "permanent"


def may_have_taken_effect(e: BaseException) -> bool:
    """A failure that may come after Slack did the work: a reset, a timeout, a 5xx, internal_error / fatal_error
    ("It's possible some aspect of the operation succeeded before the error was raised"). Not a 429 or an explicit
    refusal."""
    if isinstance(e, SlackApiError):
        name = error_name(e)
        return e.response.status_code >= 500 or name in ("internal_error", "fatal_error", "request_timeout")
    return isinstance(e, aiohttp.ClientError | OSError | TimeoutError)


def retry_after(e: BaseException) -> float | None:
    """The Retry-After of a 429 answer, in seconds."""
    if not isinstance(e, SlackApiError) or e.response.status_code != 429:
        return None
    headers = e.response.headers or {}
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = c.DELIVERY_ATTEMPTS
    base: float = c.RETRY_BASE_SECONDS
    cap: float = c.RETRY_CAP_SECONDS


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    what: str,
    *,
    retry: Callable[[BaseException], bool] = lambda e: classify(e) == "transient",
    attempts: int | None = None,
) -> T:
    """Run `call`; when it fails in a way `retry` accepts, wait a backoff (honouring a 429's Retry-After) and run
    it again, up to `attempts` (default: the policy's) times in all. The last failure propagates."""
    return await retrying(
        call,
        attempts=attempts if attempts is not None else policy.attempts,
        base=policy.base,
        cap=policy.cap,
        retryable=retry,
        retry_after=retry_after,
        what=what,
        log=log,
    )
