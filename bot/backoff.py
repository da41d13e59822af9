"""How long to wait before retrying a failed call (exponential backoff with full jitter), and a retry loop.

    delay = backoff_delay(attempt, base=0.5, cap=8.0, retry_after=server_said)   # attempt 0 = first retry
    result = await retrying(call, attempts=4, base=0.5, cap=8.0, retryable=is_transient, what="posting the reply")

Contract of `backoff_delay`: the delay is drawn uniformly from [0, min(cap, base * 2**attempt)] ("full jitter",
which spreads the retries of many clients that failed together), and is never shorter than `retry_after` when the
server said how long to wait (HTTP 429 `Retry-After`): a server's explicit wait is honoured even above `cap`;
whether to wait that long or give up is the caller's decision. Negative inputs count as zero.

`retrying` runs `call` up to `attempts` times in all, sleeping `backoff_delay` between tries, as long as each
failure is `retryable`; the last failure (or the first that is not retryable) propagates unchanged. Cancellation
is never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
_log = logging.getLogger("switchboard.backoff")

#: beyond this exponent 2**attempt only overflows; the cap has long taken over by then
_MAX_EXPONENT = 62


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` + 1 (see the module docstring)."""
    ceiling = min(max(cap, 0.0), max(base, 0.0) * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    delay = random.uniform(0.0, ceiling)
    if retry_after is not None and retry_after > delay:
        return float(retry_after)
    return delay


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    base: float,
    cap: float,
    retryable: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None] = lambda _: None,
    what: str = "a call",
    log: logging.Logger | None = None,
) -> T:
    """Run `call`, retrying retryable failures with backoff (see the module docstring)."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as e:
            attempt += 1
            if attempt >= attempts or not retryable(e):
                raise
            delay = backoff_delay(attempt - 1, base, cap, retry_after(e))
            (log or _log).info(
                "%s failed (%s: %s); attempt %d of %d in %.2f s", what, type(e).__name__, e, attempt + 1, attempts,
                delay,
            )
            await asyncio.sleep(delay)
