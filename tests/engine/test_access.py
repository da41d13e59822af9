"""Access lists, message rates, daily budgets, usage and per-assistant caps, through `Bot.accept` and the emulator.

Refusals must store nothing, start no run and be audited; limits must hold exactly with 50 concurrent senders and
survive a restart; booked usage must equal what the provider (the emulator) reported for every run of the turn.
The clock of the policy is pinned so that no minute or day ends in the middle of a test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from bot.access import BOT_BUCKET, Policy, channel_bucket, user_bucket, utc_day
from bot.config import Budgets, PlatformConfig, Price, TeamConfig
from bot.engine import Bot
from bot.types import Actor, CommandContext, Inbound, Refused
from emulator import Emulator, Rule, Script, ToolCall
from storage.sqlite import SQLiteStore
from tests.engine.harness import RecordingSurface, inbound, remote_runs, running_bot, team

NOON = 1_790_000_000.0 - 1_790_000_000.0 % 86_400 + 43_200.0  # 12:00:00 UTC on some day
SENDERS = 50


def pin_clock(bot: Bot, at: float = NOON) -> None:
    bot.policy._clock = lambda: at


def slack_msg(text: str, user: str = "U1", channel: str = "C1", *, dm: bool = False, roles: tuple[str, ...] = (),
              event_id: str | None = None, conversation: str | None = None) -> Inbound:
    base = inbound(text, user=user, event_id=event_id)
    return dataclasses.replace(
        base, platform="slack", channel=f"slack:T1:{channel}",
        conversation=conversation or f"slack:T1:{channel}:{base.event_id}", dm=dm, roles=roles,
    )


def with_access(cfg: TeamConfig, **lists: object) -> TeamConfig:
    platform = dataclasses.replace(PlatformConfig(admins=("UADMIN",)), **lists)  # type: ignore[arg-type]
    return dataclasses.replace(cfg, platforms={"slack": platform})


@contextlib.asynccontextmanager
async def slack_bot(cfg: TeamConfig) -> AsyncIterator[tuple[Bot, RecordingSurface]]:
    """A bot whose recording surface stands in for Slack (the refusals never reach it; the answers do)."""
    bot = Bot.from_config(cfg)
    surface = RecordingSurface()
    surface.platform = "slack"  # type: ignore[assignment]
    bot.add_surface(surface)
    async with bot.running():
        yield bot, surface


async def table_counts(bot: Bot) -> dict[str, int]:
    store = bot.store
    assert isinstance(store, SQLiteStore)
    counts = {}
    for table in ("inbox", "turns", "runs", "conversations", "transcript"):
        [row] = await store._rows(f"SELECT COUNT(*) AS n FROM {table}")
        counts[table] = int(row["n"])
    return counts


# ---- access ----


@pytest.mark.parametrize(
    ("lists", "message", "reason"),
    [
        ({"blocked_users": ("U1",)}, slack_msg("hi", user="U1"), "blocked_user"),
        ({"blocked_roles": ("S9",)}, slack_msg("hi", roles=("S1", "S9")), "blocked_role"),
        ({"allowed_users": ("U7",)}, slack_msg("hi", user="U1"), "user_not_allowed"),
        ({"allowed_roles": ("S7",)}, slack_msg("hi", roles=("S1",)), "user_not_allowed"),
        ({"allowed_channels": ("C2",)}, slack_msg("hi", channel="C1"), "channel_not_allowed"),
        ({"blocked_channels": ("slack:T1:C1",)}, slack_msg("hi", channel="C1"), "blocked_channel"),
        ({"dms": False}, slack_msg("hi", channel="D1", dm=True), "dms_off"),
    ],
)
async def test_refused_messages_get_an_explanation_are_audited_and_start_nothing(emu, tmp_path, lists, message,
                                                                                 reason):
    cfg = with_access(team(emu.base_url, tmp_path / "db"), **lists)
    async with slack_bot(cfg) as (bot, surface):
        with pytest.raises(Refused) as refused:
            await bot.accept(message)
        assert refused.value.reason == reason
        assert str(refused.value).startswith("Sorry,") and len(str(refused.value)) < 120
        await bot.idle()
        assert await table_counts(bot) == {"inbox": 0, "turns": 0, "runs": 0, "conversations": 0, "transcript": 0}
        assert not emu.log and not surface.deliveries
        [entry] = await bot.store.recent_audit()
        assert (entry.platform, entry.actor, entry.action, entry.outcome, entry.detail) == (
            "slack", message.user, "message", "refused", reason)
        assert message.text not in repr(entry)


async def test_allowed_users_roles_and_admins_get_answers(emu, tmp_path):
    cfg = with_access(team(emu.base_url, tmp_path / "db"), allowed_users=("U7",), allowed_roles=("S7",),
                      allowed_channels=("C1",), blocked_users=("UADMIN",))
    async with slack_bot(cfg) as (bot, surface):
        await bot.accept(slack_msg("by list", user="U7"))
        await bot.accept(slack_msg("by role", user="U8", roles=("S7",)))
        await bot.accept(slack_msg("admin anywhere", user="UADMIN", channel="C9"))  # admins are always allowed
        await bot.accept(dataclasses.replace(slack_msg("platform admin", user="U9", channel="C9"),
                                             platform_admin=True))
        await bot.accept(slack_msg("a DM", user="U7", channel="D1", dm=True))  # channel lists do not apply to DMs
        replies = await surface.wait_for(5)
        assert sorted(r.text for _, r in replies) == sorted(
            f"You said: {t}" for t in ("by list", "by role", "admin anywhere", "platform admin", "a DM"))


# ---- message rates ----


async def test_rate_limits_hold_exactly_with_fifty_concurrent_senders_and_survive_a_restart(emu, store_url):
    cfg = dataclasses.replace(team(emu.base_url, store_url),
                              budgets=Budgets(user_messages_per_minute=7, conversation_messages_per_minute=12))
    emu.scripts["proxy"] = Script(rules=[Rule(delay=0.05, reply="ok")])
    bot = Bot.from_config(cfg)
    pin_clock(bot)
    bot.add_surface(surface := RecordingSurface())
    async with bot.running():
        # one user, 50 messages at once, each in its own conversation: exactly 7 get through
        outcomes = await asyncio.gather(
            *(bot.accept(inbound(f"m{i}", conversation=f"console:test:u{i}", user="flood")) for i in range(SENDERS)),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, Refused)]
        assert len(refused) == SENDERS - 7
        assert {r.reason for r in refused} == {"limit:user_messages_per_minute"}
        assert "7 messages a minute for you" in str(refused[0]) and "12:01:00 UTC (in 1 min 0 s)" in str(refused[0])
        # 50 people in one conversation at once: exactly 12 get through
        outcomes = await asyncio.gather(
            *(bot.accept(inbound(f"p{i}", conversation="console:test:busy", user=f"p{i}")) for i in range(SENDERS)),
            return_exceptions=True,
        )
        assert sum(isinstance(o, Refused) for o in outcomes) == SENDERS - 12
        await surface.wait_for(7 + 1)  # the 12 in one conversation are answered together or in a few turns
        await bot.idle()
        audit = [e for e in await bot.store.recent_audit(200) if e.outcome == "refused"]
        assert len(audit) == 2 * SENDERS - 7 - 12
    # the counts are in the database: a restarted bot in the same minute still refuses
    bot = Bot.from_config(cfg)
    pin_clock(bot, NOON + 30)
    bot.add_surface(RecordingSurface())
    async with bot.running():
        with pytest.raises(Refused):
            await bot.accept(inbound("after restart", conversation="console:test:new", user="flood"))
        pin_clock(bot, NOON + 60)  # the next minute
        await bot.accept(inbound("next minute", conversation="console:test:new", user="flood"))


async def test_a_redelivered_event_is_a_duplicate_not_another_message(emu, tmp_path):
    cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), budgets=Budgets(user_messages_per_minute=1))
    async with running_bot(cfg) as (bot, surface):
        pin_clock(bot)
        first = await bot.accept(inbound("once", event_id="evt-same"))
        again = await bot.accept(inbound("once", event_id="evt-same"))
        assert not first.duplicate and again.duplicate
        await surface.wait_for(1)


# ---- usage and budgets ----


def provider_tokens(emu: Emulator) -> int:
    """Every token the emulator reported in the `usage` of a response or run."""
    total = 0
    for run in remote_runs(emu):
        usage = run.record.usage or {}
        total += int(usage.get("input_tokens", usage.get("prompt_tokens", 0)))
        total += int(usage.get("output_tokens", usage.get("completion_tokens", 0)))
    return total


async def test_usage_equals_the_providers_reported_usage_and_budgets_refuse_until_granted(emu, tmp_path, backend):
    cfg = dataclasses.replace(
        team(emu.base_url, tmp_path / "db", backend=backend),
        budgets=Budgets(user_tokens_per_day=1, channel_cost_per_day=1000.0),
        prices={"emu-1": Price(input=1.0, output=4.0)},
    )
    async with running_bot(cfg) as (bot, surface):
        pin_clock(bot)
        await bot.accept(inbound("ask the team about usage", user="alice"))  # proxy + three sub-assistants
        await surface.wait_for(1)
        await bot.idle()
        day = utc_day(NOON)
        rows = {r.bucket: r for r in await bot.store.usage_on(day)}
        reported = provider_tokens(emu)
        # each sub once; the proxy twice (a response or completion per step) or once (an Assistants run goes on)
        assert reported > 0 and len(remote_runs(emu)) == (4 if backend == "assistants" else 5)
        for bucket in (BOT_BUCKET, user_bucket("console", "alice"), channel_bucket("console:test"),
                       "conversation:console:test:c1"):
            assert rows[bucket].tokens == reported
        turn = (await bot.store.recent_audit(1), surface.deliveries[0][0])[1]
        record = await bot.store.get_turn(turn.id)
        assert record.input_tokens + record.output_tokens == reported
        expected_cost = (rows[BOT_BUCKET].input_tokens * 1.0 + rows[BOT_BUCKET].output_tokens * 4.0) / 1e6
        assert rows[BOT_BUCKET].cost == pytest.approx(expected_cost)
        # alice is over her budget of 1 token; bob is not
        with pytest.raises(Refused) as refused:
            await bot.accept(inbound("more please", user="alice"))
        assert refused.value.reason == "budget:user_tokens_per_day"
        assert "resets at 00:00 UTC (in 12 h 0 min)" in str(refused.value)
        await bot.accept(inbound("hello", user="bob", conversation="console:test:bob"))
        await surface.wait_for(2)
        # an admin grants alice more tokens for today
        admin = CommandContext(Actor("console", "root", platform_admin=True), channel="console:test")
        result = await bot.command(admin, f"grant user alice {reported * 10}")
        assert result.ok, result.text
        report = await bot.command(admin, "usage")
        assert f"user:console:alice: {reported:,} tokens" in report.text
        await bot.accept(inbound("thanks", user="alice"))
        await surface.wait_for(3)


async def test_a_message_sent_the_moment_a_reply_appears_is_judged_with_that_replys_usage(emu, tmp_path):
    """The next message can arrive while the reply is still being delivered: its budget check must already count the
    turn that produced the reply (a booking made only after delivery let it through)."""
    cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), budgets=Budgets(user_tokens_per_day=1))
    refusals: list[str] = []

    class EagerUser(RecordingSurface):
        async def deliver(self, turn, reply):  # type: ignore[no-untyped-def]
            if not self.deliveries:  # the user answers the first reply at once, before its delivery is finished
                try:
                    await bot.accept(inbound("and another thing", user="alice"))
                except Refused as exc:
                    refusals.append(exc.reason)
            return await super().deliver(turn, reply)

    bot = Bot.from_config(cfg)
    surface = EagerUser()
    bot.add_surface(surface)
    async with bot.running():
        pin_clock(bot)
        await bot.accept(inbound("ask the team about usage", user="alice"))
        await surface.wait_for(1)
        await bot.idle()
        assert refusals == ["budget:user_tokens_per_day"]
        assert len(surface.deliveries) == 1


async def test_max_output_tokens_reaches_the_provider_and_delegations_are_capped(emu, tmp_path, backend):
    cfg = team(emu.base_url, tmp_path / "db", backend=backend)
    cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, max_output_tokens=64, max_delegations=2))
    ask = ToolCall("ask_critic", {"task": "{input}", "context": ""})
    emu.scripts["proxy"] = Script(rules=[Rule(on="message", calls=[ask, ask, ask]),
                                         Rule(on="tool_outputs", reply="{outputs}")])
    async with running_bot(cfg) as (bot, surface):
        await bot.accept(inbound("fan out"))
        [(_, reply)] = await surface.wait_for(1)
        assert len(remote_runs(emu, "critic")) == 2
        assert reply.text.count("at most 2 times per turn") == 1
        if backend == "responses":  # (the emulator's Assistants runs do not keep their request's limits)
            assert {r.record.params.get("max_output_tokens") for r in remote_runs(emu, "proxy")} == {64}


async def test_a_policy_without_limits_reads_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    await store.open()
    try:
        policy = Policy(team("http://127.0.0.1:9", tmp_path / "db"), store)
        assert await policy._over_budget(inbound("x"), NOON) is None
        assert await store.usage_on(utc_day(NOON)) == []
    finally:
        await store.close()


async def test_usage_includes_runs_that_failed_and_were_retried(emu, tmp_path, backend):
    emu.scripts["proxy"] = Script(rules=[Rule(fail="server_error", times=1)])
    async with running_bot(team(emu.base_url, tmp_path / "db", backend=backend)) as (bot, surface):
        pin_clock(bot)
        await bot.accept(inbound("hello after a failure"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.text == "You said: hello after a failure"
        runs = remote_runs(emu, "proxy")
        assert [r.status for r in runs] == ["failed", "completed"]
        if backend != "chat":  # a chat completion that fails is an HTTP error: nothing billed, no usage
            assert runs[0].record.usage  # the provider billed the failed attempt too
        [row] = await bot.store.usage_on(utc_day(NOON), [BOT_BUCKET])
        assert row.tokens == provider_tokens(emu)


async def test_a_cost_budget_per_channel_and_a_grant_in_money(emu, tmp_path):
    cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), budgets=Budgets(channel_cost_per_day=0.000001),
                              prices={"emu-1": Price(input=1.0, output=1.0)})
    async with running_bot(cfg) as (bot, surface):
        pin_clock(bot)
        await bot.accept(inbound("spend a little", user="alice"))
        await surface.wait_for(1)
        await bot.idle()
        with pytest.raises(Refused) as refused:
            await bot.accept(inbound("and more", user="bob", conversation="console:test:bob"))
        assert refused.value.reason == "budget:channel_cost_per_day"
        assert str(refused.value).startswith("Sorry, this channel has used today's spending budget")
        admin = CommandContext(Actor("console", "root", platform_admin=True), channel="console:test")
        for bad in ("grant channel here $", "grant channel here -5", "grant user", "grant bot 1.5", "grant x y 5"):
            assert not (await bot.command(admin, bad)).ok, bad
        result = await bot.command(admin, "grant channel here $0.50")
        assert result.text == "Granted 0.50 of cost to channel:console:test for today (UTC)."
        await bot.accept(inbound("and more", user="bob", conversation="console:test:bob"))
        await surface.wait_for(2)
        [grant] = [e for e in await bot.store.recent_audit() if e.action == "grant"]
        assert (grant.actor, grant.target, grant.detail) == ("root", "channel:console:test", "0.50 of cost")


async def test_a_usage_booking_the_database_refuses_is_logged_and_the_answer_still_arrives(emu, tmp_path, caplog):
    """The booking's one fault point: its write. The reply is delivered once, nothing is raised into the worker,
    and the operator is told which conversation's usage is missing."""
    from bot.backends.providers import make_backend
    from storage.base import StoreError

    class FullOnUsage(SQLiteStore):
        async def add_usage(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise StoreError("database or disk is full")

    cfg = dataclasses.replace(team(emu.base_url, tmp_path / "db"), budgets=Budgets(user_tokens_per_day=10**9))
    bot = Bot(cfg, FullOnUsage(tmp_path / "db"), make_backend(cfg))
    surface = RecordingSurface()
    bot.add_surface(surface)
    async with bot.running():
        await bot.accept(inbound("hello", user="alice"))
        [(_, reply)] = await surface.wait_for(1)
        await bot.idle()
        assert reply.text == "You said: hello"
        await bot.accept(inbound("again", user="alice"))  # the next budget check waits for nothing left hanging
        await surface.wait_for(2)
        await bot.idle()
    assert len(surface.deliveries) == 2
    assert "usage of a turn in console:test:c1 could not be booked (database or disk is full)" in caplog.text
