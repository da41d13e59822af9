"""What a failed Discord REST call means, and retrying the ones worth retrying.

discord.py already sleeps through a 429 (its `retry_after`) and retries 500/502/504 a few times; what reaches us
is what it gave up on, and a connection reset (Linux's ECONNRESET is not among the errnos it retries) arrives as a
bare `aiohttp.ClientOSError`. `classify` sorts every failure into one class:

- ``transient``: HTTP 5xx (DiscordServerError), a 429 discord.py did not wait out, a dropped connection, a
  timeout. Worth retrying after a backoff (`with_retries`, `bot.backoff` full-jitter delays).
- ``elsewhere``: the bot may not post here: 403 50013 Missing Permissions, 50001 Missing Access, 404 10003
  Unknown Channel, 50007 Cannot send messages to this user. Deliver another way.
- ``gone``: 404 10008 Unknown Message (the message to edit was deleted).
- ``token``: the interaction's token no longer works (10062, 10015, 50027): use the channel.
- ``permanent``: anything else.

Codes: https://discord.com/developers/docs/topics/opcodes-and-status-codes#json-json-error-codes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import aiohttp
import discord

from adapters.discord.constants import (
    CANNOT_SEND_TO_USER,
    INVALID_WEBHOOK_TOKEN,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    RETRY_BASE_SECONDS,
    RETRY_CAP_SECONDS,
    SEND_ATTEMPTS,
    UNKNOWN_CHANNEL,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
)
from bot.backoff import retrying

log = logging.getLogger("switchboard.discord.retry")

T = TypeVar("T")
Failure = Literal["transient", "elsewhere", "gone", "token", "permanent"]

ELSEWHERE_CODES = frozenset({MISSING_PERMISSIONS, MISSING_ACCESS, UNKNOWN_CHANNEL, CANNOT_SEND_TO_USER})
TOKEN_CODES = frozenset({UNKNOWN_INTERACTION, UNKNOWN_WEBHOOK, INVALID_WEBHOOK_TOKEN})
#: what can go wrong on the way to Discord (discord.py lets these through unwrapped)
NETWORK_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, OSError, TimeoutError)
#: everything a Discord REST call can fail with: its HTTP errors and `NETWORK_ERRORS` (one tuple, for `except`)
CALL_ERRORS: tuple[type[Exception], ...] = (discord.HTTPException, *NETWORK_ERRORS)


def classify(e: BaseException) -> Failure:
    if isinstance(e, discord.RateLimited | discord.DiscordServerError):
        return "transient"
    if isinstance(e, discord.HTTPException):
        if e.status == 429 or e.status >= 500:
            return "transient"
        if e.code in ELSEWHERE_CODES:
            return "elsewhere"
        if e.code == UNKNOWN_MESSAGE:
            return "gone"
        if e.code in TOKEN_CODES:
            return "token"
        return "permanent"
    if isinstance(e, NETWORK_ERRORS):
        return "transient"
    return "permanent"


def is_transient(e: BaseException) -> bool:
    return classify(e) == "transient"


def reason(e: BaseException) -> str:
    """Short and machine-readable: Discord's JSON code, else `http_<status>`, else the exception's type."""
    if isinstance(e, discord.HTTPException):
        return str(e.code) if e.code else f"http_{e.status}"
    return type(e).__name__


def retry_after(e: BaseException) -> float | None:
    return e.retry_after if isinstance(e, discord.RateLimited) else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = SEND_ATTEMPTS
    base: float = RETRY_BASE_SECONDS
    cap: float = RETRY_CAP_SECONDS


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    what: str,
    *,
    retry: Callable[[BaseException], bool] = is_transient,
    attempts: int | None = None,
) -> T:
    """Run `call`, retrying failures `retry` accepts with backoff, `attempts` (default: the policy's) times in
    all; the last failure propagates."""
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
