"""Who may use the team and how much: the team file's access lists, message rates and daily budgets, checked for
every message before it is stored, and the provider usage of every turn booked against them.

`Policy.admit` stores a message through the store's atomic `admit_inbound` (so rate limits hold exactly however many
senders race) or raises `Refused` with one short, polite sentence, audited, before anything is stored or run;
`Policy.charge` starts booking a turn's usage at once and budget checks wait for bookings already started, so a
message sent after a reply is judged with that reply's usage. `Policy.team` is swapped whole by `reload`, so a check
sees one file's lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.config import Budgets, TeamConfig
from bot.types import Inbound, Refused, Usage
from storage.base import AuditEntry, InboxMessage, Store, StoreError, UsageRow

log = logging.getLogger("switchboard.access")

SECONDS_PER_DAY = 86_400
BOT_BUCKET = "bot"

NO_ACCESS_TEXT = "Sorry, you don't have access to this assistant team here; an admin can add you."
CHANNEL_TEXT = "Sorry, I'm not enabled in this channel; ask an admin, or try a channel where I am."
NO_DMS_TEXT = "Sorry, I don't take direct messages here; please mention me in a channel instead."

#: access refusal reason -> what its author is told
ACCESS_TEXTS = {
    "blocked_user": NO_ACCESS_TEXT,
    "blocked_role": NO_ACCESS_TEXT,
    "user_not_allowed": NO_ACCESS_TEXT,
    "blocked_channel": CHANNEL_TEXT,
    "channel_not_allowed": CHANNEL_TEXT,
    "dms_off": NO_DMS_TEXT,
}


def user_bucket(platform: str, user: str) -> str:
    return f"user:{platform}:{user}"


def channel_bucket(channel: str) -> str:
    return f"channel:{channel}"


def conversation_bucket(conversation: str) -> str:
    return f"conversation:{conversation}"


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def _in(seconds: float) -> str:
    seconds = max(1, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s"


def _matches(channel_key: str, entries: tuple[str, ...]) -> bool:
    """A list entry names a channel by its platform id (`C123`, a snowflake) or by our whole key."""
    return channel_key in entries or channel_key.rsplit(":", 1)[-1] in entries


@dataclass(frozen=True, slots=True)
class Limit:
    """One budget that applies to a message: its bucket, its `Budgets` field and how to name it to the user."""

    bucket: str
    field: str
    who: str  # "you", "this channel", "the team"


class Policy:
    def __init__(self, team: TeamConfig, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.team = team
        self._store = store
        self._clock = clock  # tests pin it: a minute or a day must not end in the middle of an assertion
        self._bookings: set[asyncio.Task[None]] = set()  # started by `charge`, not yet written

    # ---- access ----

    def is_admin(self, platform: str, user: str, platform_admin: bool = False) -> bool:
        return platform_admin or user in self.team.admins(platform)

    def access_refusal(self, inbound: Inbound) -> str | None:
        """The reason the lists refuse this message (a key of `ACCESS_TEXTS`), or None when it may go ahead."""
        cfg = self.team.platforms.get(inbound.platform)
        if cfg is None or self.is_admin(inbound.platform, inbound.user, inbound.platform_admin):
            return None  # the terminal has no lists: whoever runs it is the operator
        roles = set(inbound.roles)
        if inbound.user in cfg.blocked_users:
            return "blocked_user"
        if roles & set(cfg.blocked_roles):
            return "blocked_role"
        if inbound.dm and not cfg.dms:
            return "dms_off"
        if not inbound.dm and _matches(inbound.channel, cfg.blocked_channels):
            return "blocked_channel"
        if not inbound.dm and cfg.allowed_channels and not _matches(inbound.channel, cfg.allowed_channels):
            return "channel_not_allowed"
        if (cfg.allowed_users or cfg.allowed_roles) and inbound.user not in cfg.allowed_users and not (
            roles & set(cfg.allowed_roles)
        ):
            return "user_not_allowed"
        return None

    # ---- admission ----

    async def admit(self, inbound: Inbound, message: InboxMessage) -> bool:
        """Store the message if the lists, rates and budgets allow it: True when stored, False for a duplicate.
        Raises `Refused` (audited, nothing stored) otherwise."""
        reason = self.access_refusal(inbound)
        if reason is not None:
            await self._refuse(inbound, reason, ACCESS_TEXTS[reason])
        now = self._clock()
        over = await self._over_budget(inbound, now)
        if over is not None:
            await self._refuse(inbound, f"budget:{over.field}", self._budget_text(over, now))
        budgets = self.team.budgets
        quotas: dict[str, int] = {}
        if budgets.user_messages_per_minute:
            quotas["rate:" + user_bucket(inbound.platform, inbound.user)] = budgets.user_messages_per_minute
        if budgets.conversation_messages_per_minute:
            quotas["rate:" + conversation_bucket(inbound.conversation)] = budgets.conversation_messages_per_minute
        outcome = await self._store.admit_inbound(message, quotas, int(now // 60))
        if outcome == "duplicate":
            return False
        if outcome:
            limit = quotas[outcome]
            who = "you" if outcome.startswith("rate:user:") else "this conversation"
            resets = (now // 60 + 1) * 60
            text = (f"Sorry, that's more than {limit} message{'s' if limit != 1 else ''} a minute for {who}; "
                    f"the limit resets at {_clock_time(resets)} (in {_in(resets - now)}).")
            field = "user_messages_per_minute" if who == "you" else "conversation_messages_per_minute"
            await self._refuse(inbound, f"limit:{field}", text)
        return True

    def _limits_for(self, inbound: Inbound) -> list[Limit]:
        b = self.team.budgets
        wanted = [
            (user_bucket(inbound.platform, inbound.user), "user", "you"),
            (channel_bucket(inbound.channel), "channel", "this channel"),
            (BOT_BUCKET, "bot", "the team"),
        ]
        limits = []
        for bucket, scope, who in wanted:
            for unit in ("tokens", "cost"):
                field = f"{scope}_{unit}_per_day"
                if getattr(b, field):
                    limits.append(Limit(bucket, field, who))
        return limits

    async def _over_budget(self, inbound: Inbound, now: float) -> Limit | None:
        limits = self._limits_for(inbound)
        if not limits:
            return None
        await self.settled()
        rows = {r.bucket: r for r in await self._store.usage_on(utc_day(now), sorted({x.bucket for x in limits}))}
        for limit in limits:
            row = rows.get(limit.bucket)
            if row is not None and spent(row, limit.field) >= allowance(self.team.budgets, row, limit.field):
                return limit
        return None

    def _budget_text(self, limit: Limit, now: float) -> str:
        resets = (now // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY
        what = "token" if "tokens" in limit.field else "spending"
        subject = {"you": "you have", "this channel": "this channel has", "the team": "the team has"}[limit.who]
        return (f"Sorry, {subject} used today's {what} budget; it resets at 00:00 UTC "
                f"(in {_in(resets - now)}), or an admin can grant more.")

    async def _refuse(self, inbound: Inbound, reason: str, text: str) -> None:
        entry = AuditEntry(self._clock(), inbound.platform, inbound.user, "message", inbound.conversation, "refused",
                           reason)
        try:
            await self._store.add_audit(entry)
        except Exception:  # the refusal itself must still reach its author
            log.exception("could not audit the refusal of %s (%s)", inbound.event_id, reason)
        log.info("message %s from %s:%s refused: %s", inbound.event_id, inbound.platform, inbound.user, reason)
        raise Refused(text, reason)

    # ---- usage ----

    def cost(self, by_model: Mapping[str, Usage]) -> float:
        total = 0.0
        for model, usage in by_model.items():
            price = self.team.prices.get(model)
            if price is not None:
                total += (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000
        return total

    def charge(self, platform: str, user: str, channel: str, conversation: str,
               by_model: Mapping[str, Usage]) -> asyncio.Task[None]:
        """Start booking a turn's provider usage (every run of it, proxy and sub-assistants) to its author, channel,
        conversation and the whole bot, on today's (UTC) rows. Started before the reply is delivered, so a budget
        check made after the user sees the reply waits for it (`settled`); a failed booking is logged, not raised."""
        task = asyncio.get_running_loop().create_task(self._book(platform, user, channel, conversation, by_model))
        self._bookings.add(task)
        task.add_done_callback(self._bookings.discard)
        return task

    async def settled(self) -> None:
        """Wait until every booking started so far is written (or has failed)."""
        if self._bookings:
            await asyncio.wait(set(self._bookings))

    async def _book(self, platform: str, user: str, channel: str, conversation: str,
                    by_model: Mapping[str, Usage]) -> None:
        usage = sum(by_model.values(), Usage())
        if not usage.total:
            return
        buckets = [user_bucket(platform, user), channel_bucket(channel), conversation_bucket(conversation),
                   BOT_BUCKET]
        try:
            await self._store.add_usage(utc_day(self._clock()), buckets, input_tokens=usage.input_tokens,
                                        output_tokens=usage.output_tokens, cost=self.cost(by_model),
                                        cached_input_tokens=usage.cached_input_tokens)
        except StoreError as exc:
            log.error("usage of a turn in %s could not be booked (%s)", conversation, exc)

    async def grant(self, bucket: str, tokens: int = 0, cost: float = 0.0) -> None:
        """Raise today's budgets of `bucket` by `tokens` / `cost` (an admin's grant; gone at the next UTC day)."""
        await self._store.add_usage(utc_day(self._clock()), [bucket], granted_tokens=tokens, granted_cost=cost)

    async def report(self, limit: int = 30) -> str:
        """Today's usage for admins: the bot first, then the biggest users, channels and conversations."""
        now = self._clock()
        await self.settled()
        rows = await self._store.usage_on(utc_day(now))
        if not rows:
            return f"No usage recorded today ({utc_day(now)} UTC)."
        rows.sort(key=lambda r: (r.bucket != BOT_BUCKET, -r.tokens, r.bucket))
        lines = [f"Usage on {utc_day(now)} (UTC; resets at 00:00 UTC):"]
        for row in rows[:limit]:
            line = (f"  {row.bucket}: {row.tokens:,} tokens ({row.input_tokens:,} in, of which "
                    f"{row.cached_input_tokens:,} cached, {row.output_tokens:,} out)")
            if self.team.prices:
                line += f", cost {row.cost:.4f}"
            caps = self._caps(row)
            lines.append(line + (f"; budget {caps}" if caps else ""))
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more")
        return "\n".join(lines)

    def _caps(self, row: UsageRow) -> str:
        scope = row.bucket.split(":", 1)[0]
        parts = []
        for unit in ("tokens", "cost"):
            field = f"{scope}_{unit}_per_day"
            if getattr(self.team.budgets, field, 0):
                parts.append(f"{allowance(self.team.budgets, row, field):,} {unit}")
        return " / ".join(parts)


def spent(row: UsageRow, field: str) -> float:
    return row.cost if "cost" in field else row.tokens


def allowance(budgets: Budgets, row: UsageRow, field: str) -> float:
    """The bucket's budget for the day: the team file's figure plus what admins granted today."""
    base = getattr(budgets, field)
    return base + (row.granted_cost if "cost" in field else row.granted_tokens)
