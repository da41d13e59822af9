"""How long to wait before retrying a failed call: exponential backoff with full jitter.

    delay = backoff_delay(attempt, base=0.5, cap=8.0, retry_after=server_said)   # attempt 0 = first retry

Contract: the delay is drawn uniformly from [0, min(cap, base * 2**attempt)] ("full jitter", which spreads the
retries of many clients that failed together), and is never shorter than `retry_after` when the server said how
long to wait (HTTP 429 `Retry-After`): a server's explicit wait is honoured even above `cap`; whether to wait that
long or give up is the caller's decision. Negative inputs count as zero.
"""

from __future__ import annotations

import random

#: beyond this exponent 2**attempt only overflows; the cap has long taken over by then
_MAX_EXPONENT = 62


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` + 1 (see the module docstring)."""
    ceiling = min(max(cap, 0.0), max(base, 0.0) * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    delay = random.uniform(0.0, ceiling)
    if retry_after is not None and retry_after > delay:
        return float(retry_after)
    return delay
