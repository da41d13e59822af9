"""Which Slack user groups each person belongs to, for the engine's access lists (`Inbound.roles`, matched against
`allowed_roles` / `blocked_roles` of `[slack]`): read with `usergroups.list` at start, then again in the background
when older than a few minutes, so a message never waits for it.

Workspaces on Slack's free plan have no user groups (`plan_upgrade_required`) and an app installed without the
`usergroups:read` scope cannot read them (`missing_scope`): then nobody has roles, which is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.constants import USERGROUPS_REFRESH_SECONDS
from adapters.slack.retry import error_name

log = logging.getLogger(__name__)

#: usergroups.list errors that will not go away by asking again (docs.slack.dev/reference/methods/usergroups.list)
UNAVAILABLE_ERRORS = frozenset({"missing_scope", "plan_upgrade_required", "not_allowed_token_type"})


class UserGroups:
    def __init__(self, client: AsyncWebClient, ttl_seconds: float = USERGROUPS_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._of_user: dict[str, tuple[str, ...]] = {}
        self._read_at: float | None = None
        self._unavailable = False
        self._refreshing: asyncio.Task[None] | None = None

    def of(self, user: str) -> tuple[str, ...]:
        """The ids of the user's groups as last read; starts a background refresh when that is too old."""
        stale = self._read_at is None or self._clock() - self._read_at >= self._ttl
        if stale and not self._unavailable and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self.refresh(), name="slack-usergroups")
        return self._of_user.get(user, ())

    async def refresh(self) -> None:
        """Read every enabled group with its members. A failure keeps what was read before."""
        try:
            resp = await self._client.usergroups_list(include_users=True)
        except Exception as e:  # never fatal: without groups, role lists simply match nobody
            name = error_name(e)
            if name in UNAVAILABLE_ERRORS:
                self._unavailable = True
                log.warning("Slack user groups cannot be read (%s): allowed_roles / blocked_roles match nobody", name)
            else:
                log.info("reading Slack user groups failed (%s); keeping the last ones read", name)
            self._read_at = self._clock()
            return
        of_user: dict[str, list[str]] = {}
        groups: list[dict[str, Any]] = resp.get("usergroups") or []
        for group in groups:
            if group.get("date_delete"):  # disabled
                continue
            for user in group.get("users") or ():
                of_user.setdefault(str(user), []).append(str(group["id"]))
        self._of_user = {user: tuple(ids) for user, ids in of_user.items()}
        self._read_at = self._clock()

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
