"""Who is a Slack workspace admin or owner (users.info), cached briefly. Authorisation itself is the engine's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.constants import ADMIN_CACHE_SECONDS

log = logging.getLogger(__name__)


class AdminCache:
    def __init__(
        self,
        client: AsyncWebClient,
        ttl_seconds: float = ADMIN_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}

    async def is_admin(self, user: str) -> bool:
        """True for workspace admins and owners. On a Slack error: False (the engine's own admin list still
        applies), and nothing is cached so the next command asks again."""
        hit = self._cache.get(user)
        now = self._clock()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        try:
            resp = await self._client.users_info(user=user)
        except SlackApiError as e:
            log.warning("users.info failed for %s: %s", user, e.response.get("error"))
            return False
        info = resp.get("user") or {}
        admin = bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))
        self._cache[user] = (now, admin)
        return admin
